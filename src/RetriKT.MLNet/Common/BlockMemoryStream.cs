namespace RetriKT.MLNet.Common;

/// <summary>
/// A read-only, seekable stream over bytes held in blocks (4 KiB, doubling up to 1 MiB: a small part takes little more
/// than its size), with the length and FNV-1a checksum
/// (<see cref="ChecksumStream"/>) of what it copied. A model.zip part is read whole and verified before it is parsed,
/// and a byte array or <see cref="MemoryStream"/> holds at most 2 GiB, which a knowledge store's part passes from about
/// 1.4 million entries of 384 floats: such a model saved, and then failed to load as "damaged".
/// </summary>
internal sealed class BlockMemoryStream : Stream
{
    private const int FirstBlockSize = 4 << 10, BlockSize = 1 << 20;
    private readonly List<byte[]> _blocks = [];
    private readonly List<long> _starts = [];
    private long _length, _position;

    private BlockMemoryStream() { }

    /// <summary>The checksum of the bytes copied from the source.</summary>
    public ulong Hash { get; private init; }

    /// <summary>Copies <paramref name="source"/> to its end.</summary>
    public static BlockMemoryStream CopyOf(Stream source)
    {
        var hashing = new ChecksumStream(source, writing: false);
        var blocks = new List<byte[]>();
        var starts = new List<long>();
        long length = 0;
        while (true)
        {
            var block = new byte[Math.Min(BlockSize, (long)FirstBlockSize << Math.Min(blocks.Count, 16))];
            int filled = hashing.ReadAtLeast(block, block.Length, throwOnEndOfStream: false);
            if (filled > 0)
            {
                blocks.Add(block);
                starts.Add(length);
            }
            length += filled;
            if (filled < block.Length) break;
        }
        var stream = new BlockMemoryStream { Hash = hashing.Hash };
        stream._blocks.AddRange(blocks);
        stream._starts.AddRange(starts);
        stream._length = length;
        return stream;
    }

    /// <summary>The bytes as one array (for a part known to be small).</summary>
    public byte[] ToArray()
    {
        var bytes = new byte[_length];
        Position = 0;
        ReadExactly(bytes);
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
            int index = _starts.BinarySearch(_position);
            if (index < 0) index = ~index - 1;
            var block = _blocks[index];
            int inBlock = (int)(_position - _starts[index]);
            int n = (int)Math.Min(Math.Min(block.Length - inBlock, buffer.Length - read), _length - _position);
            block.AsSpan(inBlock, n).CopyTo(buffer[read..]);
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
