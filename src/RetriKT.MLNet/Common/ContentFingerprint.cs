using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;

namespace RetriKT.MLNet.Common;

/// <summary>
/// The one way RetriKT fingerprints an encoder (<see cref="Knowledge.IStoreEncoder.Fingerprint"/>): SHA-256 over typed
/// values, each written with its length so that no two different sequences of values hash the same bytes, shown as
/// the first 128 bits in lowercase hex. The first value names what is hashed, so a student and a sentence encoder
/// never share a fingerprint by construction.
/// </summary>
internal sealed class ContentFingerprint : IDisposable
{
    private readonly IncrementalHash _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);

    /// <summary>Starts a fingerprint of a <paramref name="kind"/> of thing (for example "bert-sentence-encoder/1").</summary>
    public ContentFingerprint(string kind) => Add(kind);

    /// <summary>Adds a string (null differs from empty).</summary>
    public ContentFingerprint Add(string? value)
    {
        if (value is null) return Add(-1L);
        var bytes = Encoding.UTF8.GetBytes(value);
        Add(bytes.LongLength);
        _hash.AppendData(bytes);
        return this;
    }

    /// <summary>Adds an integer.</summary>
    public ContentFingerprint Add(long value)
    {
        Span<byte> bytes = stackalloc byte[8];
        BinaryPrimitives.WriteInt64LittleEndian(bytes, value);
        _hash.AppendData(bytes);
        return this;
    }

    /// <summary>Adds a double by its bits.</summary>
    public ContentFingerprint Add(double value) => Add(BitConverter.DoubleToInt64Bits(value));

    /// <summary>Adds a flag.</summary>
    public ContentFingerprint Add(bool value) => Add(value ? 1L : 0L);

    /// <summary>Adds the values (little-endian float32 bits, as every RetriKT format stores them).</summary>
    public ContentFingerprint Add(ReadOnlySpan<float> values)
    {
        Add((long)values.Length);
        _hash.AppendData(MemoryMarshal.AsBytes(values));
        return this;
    }

    /// <summary>Adds a tokenizer's vocabulary: its tokens in id order and whether it lowercases.</summary>
    public ContentFingerprint Add(Text.WordPieceVocabulary vocabulary)
    {
        Add(vocabulary.LowerCase);
        Add((long)vocabulary.Tokens.Count);
        foreach (var token in vocabulary.Tokens) Add(token);
        return this;
    }

    /// <summary>The fingerprint: the first 128 bits of the SHA-256, lowercase hex (32 characters).</summary>
    public string Finish() => Convert.ToHexStringLower(_hash.GetHashAndReset().AsSpan(0, 16));

    /// <inheritdoc/>
    public void Dispose() => _hash.Dispose();
}
