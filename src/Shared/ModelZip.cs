using System.IO.Compression;
using System.Reflection;
using System.Text;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace RetriKT.MLNet.Common;

/// <summary>
/// Integrity checks and one-line errors for model.zip files, compiled into both RetriKT.MLNet (<c>ModelFiles</c>) and
/// RetriKT.MLNet.Hosting (its loaders), which must not depend on each other. ML.NET does not check the zip's CRC, so a
/// flipped bit in a part can load as a different model; <see cref="Verify"/> checks every entry's length and CRC-32,
/// and reads the input schema as ML.NET will, from a stream that fails at its end.
/// </summary>
internal static class ModelZip
{
    /// <summary>Longest error message kept (a damaged part can make a parser echo kilobytes of binary).</summary>
    private const int MaxMessageLength = 400;

    /// <summary>The part where <c>Model.Save</c> writes the input schema (an ML.NET binary data view with no rows).</summary>
    private const string SchemaPart = "Schema";

    /// <summary>
    /// Checks that every entry of the zip in <paramref name="stream"/> decompresses to its recorded length and CRC-32, and
    /// that the input schema reads; otherwise throws one <see cref="InvalidDataException"/> line naming the part, prefixed
    /// by "<paramref name="name"/>: " when a name is given. The stream's position is left anywhere.
    /// </summary>
    public static void Verify(Stream stream, string? name)
    {
        ArgumentNullException.ThrowIfNull(stream);
        string prefix = name is null ? "" : name + ": ";
        ZipArchive zip;
        IReadOnlyList<ZipArchiveEntry> entries;
        try
        {
            zip = new ZipArchive(stream, ZipArchiveMode.Read, leaveOpen: true);
            entries = zip.Entries; // the central directory is read here
        }
        catch (Exception e) when (e is InvalidDataException or IOException or ArgumentException)
        {
            throw new InvalidDataException($"{prefix}not a readable model.zip ({OneLine(e.Message)})", e);
        }
        using (zip)
        {
            var buffer = new byte[81920];
            MemoryStream? schema = null;
            foreach (var entry in entries)
            {
                long length = 0;
                uint crc = Crc32.Initial;
                var copy = entry.FullName == SchemaPart ? schema = new MemoryStream() : null;
                try
                {
                    using var data = entry.Open();
                    for (int n; (n = data.Read(buffer)) > 0;)
                    {
                        crc = Crc32.Append(crc, buffer.AsSpan(0, n));
                        length += n;
                        copy?.Write(buffer, 0, n);
                    }
                }
                catch (Exception e) when (e is InvalidDataException or IOException or NotSupportedException)
                {
                    throw new InvalidDataException($"{prefix}part '{Printable(entry.FullName)}' cannot be read ({OneLine(e.Message)}).", e);
                }
                crc = Crc32.Finish(crc);
                if (length != entry.Length || crc != entry.Crc32)
                    throw new InvalidDataException($"{prefix}part '{Printable(entry.FullName)}' is damaged or was modified: " +
                        $"{length} bytes with CRC-32 {crc:x8}, expected {entry.Length} bytes with CRC-32 {entry.Crc32:x8}.");
            }
            if (schema is not null) CheckSchema(schema.ToArray(), prefix);
        }
    }

    /// <summary>
    /// Reads the input schema as <c>Model.Load</c> does (ML.NET's binary loader), from a stream that fails when read past
    /// its end. ML.NET's reader retries a read that returns nothing, so a length in the part that points past its end (a
    /// part rewritten inside a valid zip, which the CRC cannot tell) hung <c>Model.Load</c> forever, and with it a verified
    /// load and the hosting pool's reload; here it fails naming the part.
    /// </summary>
    private static void CheckSchema(byte[] schema, string prefix)
    {
        try
        {
            _ = new MLContext().Data.LoadFromBinary(new OneStreamSource(schema)).Schema;
        }
        catch (Exception e)
        {
            throw new InvalidDataException($"{prefix}part '{SchemaPart}' cannot be read ({Describe(e)}).", e);
        }
    }

    /// <summary>One part's bytes as the source of ML.NET's binary loader.</summary>
    private sealed class OneStreamSource(byte[] bytes) : IMultiStreamSource
    {
        public int Count => 1;
        public string? GetPathOrNull(int index) => null;
        public Stream Open(int index) => new EndFailingStream(bytes);
        public TextReader OpenTextReader(int index) => new StreamReader(Open(index));
    }

    /// <summary>A read-only stream over bytes whose reads fail at the end instead of returning nothing.</summary>
    private sealed class EndFailingStream(byte[] bytes) : MemoryStream(bytes, writable: false)
    {
        // MemoryStream sends a derived type's span reads here.
        public override int Read(byte[] buffer, int offset, int count)
        {
            int n = base.Read(buffer, offset, count);
            if (n == 0 && count > 0) throw new EndOfStreamException($"the part ends at byte {Length} before the data it describes");
            return n;
        }
    }

    /// <summary>
    /// One printable line for a model-loading failure: the innermost meaningful exception (ML.NET calls loaders through
    /// reflection), control characters replaced, at most a few hundred characters.
    /// </summary>
    public static string Describe(Exception exception)
    {
        var message = Innermost(exception).Message;
        // libtorch's messages carry the C++ backtrace after the reason ("Exception raised from ... frame #0: ..."): the
        // line the user reads would be a few hundred characters of stack frames after the reason.
        int backtrace = message.IndexOf("Exception raised from ", StringComparison.Ordinal);
        return OneLine(backtrace > 0 ? message[..backtrace] : message);
    }

    /// <summary>
    /// The exception under reflection and aggregation wrappers, and under ML.NET's "Error during class instantiation"
    /// (an InvalidOperationException around the TargetInvocationException of a loader that failed with one of ML.NET's
    /// own errors, such as "Corrupt file header"): that wrapper names neither the part nor the cause.
    /// </summary>
    public static Exception Innermost(Exception exception)
    {
        var e = exception;
        while (e is TargetInvocationException or TypeInitializationException or AggregateException or InvalidOperationException { InnerException: TargetInvocationException }
               && e.InnerException is { } inner) e = inner;
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
