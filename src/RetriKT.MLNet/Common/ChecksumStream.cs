namespace RetriKT.MLNet.Common;

/// <summary>
/// FNV-1a 64 over the bytes passing through (detects truncation and tampering; not a security hash). Shared by the
/// knowledge store's and the HNSW graph's binary formats (both end with this checksum of everything before it) and by
/// the per-part checksums of every persisted component (<c>Bridge/PartChecksums.cs</c>).
/// </summary>
internal sealed class ChecksumStream(Stream inner, bool writing) : Stream
{
    public ulong Hash { get; private set; } = 14695981039346656037UL;
    /// <summary>Bytes that passed through.</summary>
    public long Count { get; private set; }
    private void Mix(ReadOnlySpan<byte> bytes)
    {
        ulong h = Hash;
        foreach (var b in bytes) { h ^= b; h *= 1099511628211UL; }
        Hash = h;
        Count += bytes.Length;
    }

    /// <summary>Length and checksum of <paramref name="bytes"/>.</summary>
    public static (long Length, ulong Hash) Of(ReadOnlySpan<byte> bytes)
    {
        var checksum = new ChecksumStream(Null, writing: true);
        checksum.Write(bytes);
        return (checksum.Count, checksum.Hash);
    }
    public override bool CanRead => !writing;
    public override bool CanSeek => false;
    public override bool CanWrite => writing;
    public override long Length => inner.Length;
    public override long Position { get => inner.Position; set => throw new NotSupportedException(); }
    public override void Flush() => inner.Flush();
    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));
    public override int Read(Span<byte> buffer) { int n = inner.Read(buffer); Mix(buffer[..n]); return n; }
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
    public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));
    public override void Write(ReadOnlySpan<byte> buffer) { Mix(buffer); inner.Write(buffer); }
}
