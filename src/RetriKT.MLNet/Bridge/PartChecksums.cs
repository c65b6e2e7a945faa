using System.Text;
using RetriKT.MLNet.Common;

namespace RetriKT.MLNet.Bridge;

/// <summary>
/// Length and FNV-1a 64 checksum of every part of one persisted component: the body of its <c>Model.key</c>, the
/// strings of that stream's string table, and each side stream (weights, store, vocabulary). <see cref="ModelWriter"/>
/// writes them last, as the side stream <see cref="StreamName"/> (itself ending with the checksum of what precedes
/// it); <see cref="ModelReader"/> verifies each part before the component parses it. The zip's own CRC is not
/// checked by ML.NET, so without this a flipped bit in model.zip loads as a different model.
/// </summary>
internal sealed class PartChecksums
{
    public const string StreamName = "Checksums.bin";
    /// <summary>The body of Model.key (what the component wrote after ML.NET's header).</summary>
    public const string BodyPart = "Model.key";
    /// <summary>The strings of Model.key's string table (labels, paths, column names).</summary>
    public const string StringsPart = "Model.key strings";
    /// <summary>
    /// The format version in Model.key's header, which decides how the body is read: not part of the body, so a header
    /// changed to an older version the library still reads would load the body as that version (a different model).
    /// Its entry holds the version written in place of a length and the version readable from in place of a checksum;
    /// files written before it have no such entry.
    /// </summary>
    public const string VersionPart = "Model.key version";
    private const int Magic = 0x52_4B_54_43; // "CTKR"
    private const int MaxParts = 1024, MaxNameLength = 256;

    private readonly Dictionary<string, (long Length, ulong Hash)> _parts = new(StringComparer.Ordinal);

    public void Add(string part, long length, ulong hash) => _parts[part] = (length, hash);

    /// <summary>Length and checksum of a string table (each string length-prefixed UTF-8, in id order).</summary>
    public static (long Length, ulong Hash) OfStrings(IEnumerable<string> strings)
    {
        var checksum = new ChecksumStream(Stream.Null, writing: true);
        using (var w = new BinaryWriter(checksum, Encoding.UTF8, leaveOpen: true))
            foreach (var s in strings) w.Write(s);
        return (checksum.Count, checksum.Hash);
    }

    public void Write(BinaryWriter output)
    {
        var checksum = new ChecksumStream(output.BaseStream, writing: true);
        using (var w = new BinaryWriter(checksum, Encoding.UTF8, leaveOpen: true))
        {
            w.Write(Magic);
            w.Write(_parts.Count);
            foreach (var (part, (length, hash)) in _parts.OrderBy(p => p.Key, StringComparer.Ordinal))
            {
                var name = Encoding.UTF8.GetBytes(part);
                w.Write((ushort)name.Length);
                w.Write(name);
                w.Write(length);
                w.Write(hash);
            }
        }
        output.Write(checksum.Hash);
    }

    /// <summary>Reads the checksums; <paramref name="where"/> names the stream in errors.</summary>
    public static PartChecksums Read(byte[] bytes, string where)
    {
        var result = new PartChecksums();
        try
        {
            var checksum = new ChecksumStream(new MemoryStream(bytes, writable: false), writing: false);
            using var r = new BinaryReader(checksum, Encoding.UTF8, leaveOpen: true);
            if (r.ReadInt32() != Magic) throw Damaged(where, "it does not start with the checksum table's signature");
            int count = r.ReadInt32();
            if (count is < 1 or > MaxParts) throw Damaged(where, $"it lists {count} parts");
            for (int i = 0; i < count; i++)
            {
                int nameLength = r.ReadUInt16();
                if (nameLength is < 1 or > MaxNameLength) throw Damaged(where, $"part {i} has a name of {nameLength} bytes");
                var name = r.ReadBytes(nameLength);
                if (name.Length != nameLength) throw new EndOfStreamException();
                result._parts[Encoding.UTF8.GetString(name)] = (r.ReadInt64(), r.ReadUInt64());
            }
            ulong computed = checksum.Hash;
            if (r.ReadUInt64() != computed || checksum.Count != bytes.Length)
                throw Damaged(where, "its own checksum does not match");
        }
        catch (EndOfStreamException)
        {
            throw Damaged(where, $"it is truncated ({bytes.Length} bytes)");
        }
        return result;
    }

    /// <summary>Throws naming the part when <paramref name="length"/>/<paramref name="hash"/> differ from what was written.</summary>
    public void Verify(string part, long length, ulong hash, string where)
    {
        if (!_parts.TryGetValue(part, out var expected))
            throw Damaged(where, $"{StreamName} has no entry for it");
        if (expected.Length != length || expected.Hash != hash)
        {
            var what = length < expected.Length ? "it is truncated: " : length > expected.Length ? "it is longer than written: " : "";
            throw Damaged(where, $"{what}found {length} bytes with checksum {hash:x16}, expected {expected.Length} bytes with checksum {expected.Hash:x16}");
        }
    }

    /// <summary>Records the format version stamped in Model.key's header (<see cref="VersionPart"/>).</summary>
    public void AddVersion(uint written, uint readable) => Add(VersionPart, written, readable);

    /// <summary>Throws naming the part when the header's version differs from the one recorded; a file without the entry passes.</summary>
    public void VerifyVersion(uint written, uint readable, string where)
    {
        if (!_parts.TryGetValue(VersionPart, out var expected)) return;
        if (expected.Length != written || expected.Hash != readable)
            throw Damaged(where, $"its header says format version {written:x8} (readable from {readable:x8}), but it was written as " +
                                 $"{expected.Length:x8} (readable from {expected.Hash:x8})");
    }

    /// <summary>The length written for <paramref name="part"/>, or -1 when it is not listed.</summary>
    public long ExpectedLength(string part) => _parts.TryGetValue(part, out var p) ? p.Length : -1;

    public static InvalidDataException Damaged(string where, string why) =>
        new($"model.zip part '{where}' is damaged or was modified: {why}.");

    /// <summary>A part written in a format version this library does not read (not damage: the file may be whole).</summary>
    public static InvalidDataException Unreadable(string where, string why) =>
        new($"model.zip part '{where}' cannot be read: {why}.");
}
