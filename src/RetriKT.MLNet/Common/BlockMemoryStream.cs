namespace RetriKT.MLNet.Common;

/// <summary>
/// A read-only, seekable stream over bytes held in 1 MiB blocks, with the length and FNV-1a checksum
/// (<see cref="ChecksumStream"/>) of what it copied. A model.zip part is read whole and verified before it is parsed,
/// and a byte array or <see cref="MemoryStream"/> holds at most 2 GiB, which a knowledge store's part passes from about
/// 1.4 million entries of 384 floats: such a model saved, and then failed to load as "damaged".
/// </summary>
internal sealed class BlockMemoryStream : Stream
{
    private const int BlockSize = 1 << 20;
    private readonly List<byte[]> _blocks = [];
    private long _length, _position;

    private BlockMemoryStream() { }

    /// <summary>The checksum of the bytes copied from the source.</summary>
    public ulong Hash { get; private init; }

    /// <summary>Copies <paramref name="source"/> to its end.</summary>
    public static BlockMemoryStream CopyOf(Stream source)
    {
        var hashing = new ChecksumStream(source, writing: false);
        var blocks = new List<byte[]>();
        long length = 0;
        while (true)
        {
            var block = new byte[BlockSize];
            int filled = hashing.ReadAtLeast(block, BlockSize, throwOnEndOfStream: false);
            if (filled > 0) blocks.Add(block);
            length += filled;
            if (filled < BlockSize) break;
        }
        var stream = new BlockMemoryStream { Hash = hashing.Hash };
        stream._blocks.AddRange(blocks);
        stream._length = length;
        return stream;
    }

    /// <summary>The bytes as one array (for a part known to be small).</summary>
    public byte[] ToArray()
    {
        var bytes = new byte[_length];
        long at = 0;
        foreach (var block in _blocks)
        {
            int n = (int)Math.Min(BlockSize, _length - at);
            block.AsSpan(0, n).CopyTo(bytes.AsSpan((int)at));
            at += n;
        }
        return bytes;
    }

    public override bool CanRead => true;
    public override bool CanSeek => true;
    public override bool CanWrite => false;
    public override long Length => _length;

    public override long Position
    {
        get => _position;
        set => _position = value >= 0 ? value : throw new ArgumentOutOfRangeException(nameof(value), $"Position must be >= 0, found {value}.");
    }

    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

    public override int Read(Span<byte> buffer)
    {
        int read = 0;
        while (read < buffer.Length && _position < _length)
        {
            int inBlock = (int)(_position % BlockSize);
            int n = (int)Math.Min(Math.Min(BlockSize - inBlock, buffer.Length - read), _length - _position);
            _blocks[(int)(_position / BlockSize)].AsSpan(inBlock, n).CopyTo(buffer[read..]);
            read += n;
            _position += n;
        }
        return read;
    }

    public override long Seek(long offset, SeekOrigin origin) => Position = origin switch
    {
        SeekOrigin.Begin => offset,
        SeekOrigin.Current => _position + offset,
        SeekOrigin.End => _length + offset,
        _ => throw new ArgumentOutOfRangeException(nameof(origin)),
    };

    public override void Flush() { }
    public override void SetLength(long value) => throw new NotSupportedException();
    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
}
