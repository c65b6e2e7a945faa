using System.Security.Cryptography;

namespace RetriKT.MLNet.Hosting;

/// <summary>
/// A model.zip read whole, apart from its source, with its SHA-256: both loaders verify and load a copy, so a file
/// replaced during the load or a download cut short cannot load as a mix of two models, and what was verified is what
/// loads. The copy is held in memory up to <see cref="SpillAboveBytes"/> and in a temporary file of its own (deleted on
/// dispose, and by the operating system when the process ends) past that: the loaders held it in one byte array, which
/// holds at most 2 GiB, so a model whose knowledge store passes that, which saves and loads from a path, could not be
/// served (File.ReadAllBytes: "The file is too long"; a download failed at the buffer limit).
/// </summary>
internal sealed class ModelSnapshot : IDisposable
{
    /// <summary>Past this many bytes the copy goes to a temporary file (1 GiB; internal so that a test can spill a small model).</summary>
    internal static long SpillAboveBytes = 1L << 30;

    private readonly MemoryStream? _memory;
    private readonly FileStream? _file;

    private ModelSnapshot(MemoryStream? memory, FileStream? file, long length, byte[] sha256) => (_memory, _file, Length, Sha256) = (memory, file, length, sha256);

    /// <summary>Bytes copied.</summary>
    public long Length { get; }

    /// <summary>SHA-256 of the bytes copied.</summary>
    public byte[] Sha256 { get; }

    /// <summary>The temporary file holding the copy (<see cref="SpillAboveBytes"/>), or null when it is in memory.</summary>
    public string? SpillFile => _file?.Name;

    /// <summary>A read-only stream over the copy from its start; valid until the snapshot is disposed. One reader at a time.</summary>
    public Stream Open()
    {
        if (_memory is not null) return new MemoryStream(_memory.GetBuffer(), 0, (int)_memory.Length, writable: false);
        _file!.Position = 0;
        return new NonClosingStream(_file);
    }

    /// <summary>Copies <paramref name="source"/> to its end.</summary>
    public static async Task<ModelSnapshot> CopyAsync(Stream source, CancellationToken cancellationToken)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var memory = new MemoryStream();
        FileStream? file = null;
        var buffer = new byte[1 << 20];
        try
        {
            for (int n; (n = await source.ReadAsync(buffer, cancellationToken).ConfigureAwait(false)) > 0;)
            {
                hash.AppendData(buffer, 0, n);
                if (file is null && memory.Length + n > SpillAboveBytes)
                {
                    file = new FileStream(Path.Combine(Path.GetTempPath(), $"retrikt-model-{Guid.NewGuid():N}.zip.tmp"), FileMode.CreateNew,
                        FileAccess.ReadWrite, FileShare.None, 1 << 16, FileOptions.DeleteOnClose | FileOptions.Asynchronous);
                    memory.Position = 0;
                    await memory.CopyToAsync(file, cancellationToken).ConfigureAwait(false);
                    memory = new MemoryStream(); // the copy so far is in the file; let the array go
                }
                if (file is not null) await file.WriteAsync(buffer.AsMemory(0, n), cancellationToken).ConfigureAwait(false);
                else memory.Write(buffer, 0, n);
            }
            if (file is not null) await file.FlushAsync(cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            file?.Dispose();
            throw;
        }
        long length = file?.Length ?? memory.Length;
        return new ModelSnapshot(file is null ? memory : null, file, length, hash.GetHashAndReset());
    }

    /// <summary>Deletes the temporary file, if any.</summary>
    public void Dispose() => _file?.Dispose();

    /// <summary>The snapshot's file for one reader: ML.NET and the zip reader close what they are given.</summary>
    private sealed class NonClosingStream(Stream inner) : Stream
    {
        public override bool CanRead => true;
        public override bool CanSeek => true;
        public override bool CanWrite => false;
        public override long Length => inner.Length;
        public override long Position { get => inner.Position; set => inner.Position = value; }
        public override int Read(byte[] buffer, int offset, int count) => inner.Read(buffer, offset, count);
        public override int Read(Span<byte> buffer) => inner.Read(buffer);
        public override long Seek(long offset, SeekOrigin origin) => inner.Seek(offset, origin);
        public override void Flush() { }
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }
}
