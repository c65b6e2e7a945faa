using System.IO.Compression;
using System.Reflection;
using System.Text;
using Microsoft.ML;

namespace RetriKT.MLNet;

/// <summary>
/// Verified loading of model.zip files. ML.NET does not check the zip's CRC, so a flipped bit in a part that is not
/// RetriKT's own (the input schema, a MapKeyToValue step) can load as a different model; RetriKT's own parts carry
/// their own checksums (checked by any <c>Model.Load</c>). <see cref="LoadVerified(ModelOperationsCatalog, string, out DataViewSchema)"/>
/// checks every entry's length and CRC-32 first, then loads, and reports any failure as one
/// <see cref="InvalidDataException"/> line naming the file and the part.
/// </summary>
public static class ModelFiles
{
    /// <summary>Longest error message kept (a damaged part can make a parser echo kilobytes of binary).</summary>
    private const int MaxMessageLength = 400;

    /// <summary>Verifies every entry of the model file at <paramref name="path"/>, then loads it.</summary>
    public static ITransformer LoadVerified(this ModelOperationsCatalog catalog, string path, out DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        ArgumentNullException.ThrowIfNull(path);
        using var stream = File.OpenRead(path);
        return catalog.LoadVerified(stream, path, out inputSchema);
    }

    /// <summary>Verifies every entry of the model in <paramref name="stream"/> (seekable; <paramref name="name"/> names it in errors), then loads it.</summary>
    public static ITransformer LoadVerified(this ModelOperationsCatalog catalog, Stream stream, string name, out DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        ArgumentNullException.ThrowIfNull(stream);
        long start = stream.Position;
        Verify(stream, name);
        stream.Position = start;
        try
        {
            return catalog.Load(stream, out inputSchema);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            throw new InvalidDataException($"{name}: {Describe(e)}", Innermost(e));
        }
    }

    /// <summary>Checks that every entry of the zip in <paramref name="stream"/> decompresses to its recorded length and CRC-32.</summary>
    public static void Verify(Stream stream, string name)
    {
        ArgumentNullException.ThrowIfNull(stream);
        ZipArchive zip;
        IReadOnlyList<ZipArchiveEntry> entries;
        try
        {
            zip = new ZipArchive(stream, ZipArchiveMode.Read, leaveOpen: true);
            entries = zip.Entries; // the central directory is read here
        }
        catch (Exception e) when (e is InvalidDataException or IOException or ArgumentException)
        {
            throw new InvalidDataException($"{name}: not a readable model.zip ({OneLine(e.Message)})", e);
        }
        using (zip)
        {
            foreach (var entry in entries)
            {
                long length = 0;
                uint crc = Crc32.Initial;
                try
                {
                    using var data = entry.Open();
                    var buffer = new byte[81920];
                    for (int n; (n = data.Read(buffer)) > 0;)
                    {
                        crc = Crc32.Append(crc, buffer.AsSpan(0, n));
                        length += n;
                    }
                }
                catch (Exception e) when (e is InvalidDataException or IOException or NotSupportedException)
                {
                    throw new InvalidDataException($"{name}: part '{Printable(entry.FullName)}' cannot be read ({OneLine(e.Message)}).", e);
                }
                crc = Crc32.Finish(crc);
                if (length != entry.Length || crc != entry.Crc32)
                    throw new InvalidDataException($"{name}: part '{Printable(entry.FullName)}' is damaged or was modified: " +
                        $"{length} bytes with CRC-32 {crc:x8}, expected {entry.Length} bytes with CRC-32 {entry.Crc32:x8}.");
            }
        }
    }

    /// <summary>
    /// One printable line for a model-loading failure: the innermost meaningful exception (ML.NET's reflection
    /// layers removed), control characters replaced, at most a few hundred characters.
    /// </summary>
    public static string Describe(Exception exception)
    {
        ArgumentNullException.ThrowIfNull(exception);
        return OneLine(Innermost(exception).Message);
    }

    /// <summary>The exception under reflection and aggregation wrappers.</summary>
    public static Exception Innermost(Exception exception)
    {
        var e = exception;
        while (e is TargetInvocationException or TypeInitializationException or AggregateException && e.InnerException is { } inner) e = inner;
        return e;
    }

    private static string OneLine(string message)
    {
        var printable = Printable(message);
        return printable.Length <= MaxMessageLength ? printable : printable[..(MaxMessageLength - 1)] + "…";
    }

    private static string Printable(string text)
    {
        var b = new StringBuilder(Math.Min(text.Length, MaxMessageLength * 2));
        foreach (var c in text)
        {
            if (b.Length > MaxMessageLength * 2) break;
            b.Append(c is '\n' or '\r' or '\t' ? ' ' : char.IsControl(c) || char.IsSurrogate(c) || c == '\uFFFD' ? '?' : c);
        }
        return b.ToString().Trim();
    }

    /// <summary>CRC-32 (IEEE, as in zip).</summary>
    private static class Crc32
    {
        public const uint Initial = 0xFFFFFFFF;
        private static readonly uint[] Table = Enumerable.Range(0, 256).Select(i =>
        {
            uint c = (uint)i;
            for (int k = 0; k < 8; k++) c = (c & 1) != 0 ? 0xEDB88320 ^ (c >> 1) : c >> 1;
            return c;
        }).ToArray();

        public static uint Append(uint crc, ReadOnlySpan<byte> bytes)
        {
            foreach (var b in bytes) crc = Table[(crc ^ b) & 0xFF] ^ (crc >> 8);
            return crc;
        }

        public static uint Finish(uint crc) => crc ^ 0xFFFFFFFF;
    }
}
