using System.Text;
using Utf8Validation = System.Text.Unicode.Utf8;

namespace RetriKT.MLNet.Common;

/// <summary>
/// The lines of a text file that must be UTF-8, every file a user gives the library as text: a WordPiece vocab.txt, a
/// knowledge store's JSONL, the corpora (<c>CorpusSentences</c>) and the labelled task splits (GLUE and LM-BFF .tsv files,
/// FewGLUE .jsonl files, a user's own task). Read with <see cref="File.ReadLines(string)"/>, a file in another encoding
/// (Latin-1, Windows-1252) comes through with U+FFFD in place of every byte that is not UTF-8, and those rows would be
/// tokenized, trained on, labelled, stored and scored as if they were the text; here such a file fails with one line
/// naming the file, the line and the byte. In the runtime assembly, so the runtime's own readers use it as well.
/// </summary>
public static class Utf8TextFile
{
    /// <summary>
    /// The lines of <paramref name="path"/>, read lazily as <see cref="File.ReadLines(string)"/> reads them (a leading UTF-8
    /// byte order mark skipped, a UTF-16 one detected). A byte that is not UTF-8 fails with an <see cref="InvalidDataException"/>:
    /// "<c>{name} '{path}' line {n}: expected UTF-8 text, found byte 0x{b}; save the text as UTF-8.</c>" (without a
    /// <paramref name="name"/>, the message starts with the path, as the task readers' other messages do).
    /// </summary>
    /// <param name="path">The file.</param>
    /// <param name="name">What the file is to the user (an option such as <c>StoreCorpus</c>), or null.</param>
    public static IEnumerable<string> ReadLines(string path, string? name = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        return Lines(path, name);
    }

    /// <summary>All lines of <paramref name="path"/> (<see cref="ReadLines"/>), as <see cref="File.ReadAllLines(string)"/> returns them.</summary>
    public static string[] ReadAllLines(string path, string? name = null) => [.. ReadLines(path, name)];

    private static IEnumerable<string> Lines(string path, string? name)
    {
        using var reader = new StreamReader(path, Utf8);
        while (true)
        {
            string? line;
            try { line = reader.ReadLine(); }
            catch (DecoderFallbackException e)
            {
                // The reader decodes ahead of the line it returns, so the line is found in the bytes themselves.
                throw new InvalidDataException($"{(name is null ? path : $"{name} '{path}'")} line {FirstInvalidLine(path)}: expected UTF-8 text, " +
                    $"found byte 0x{(e.BytesUnknown is { Length: > 0 } b ? b[0] : 0):X2}; save the text as UTF-8.", e);
            }
            if (line is null) yield break;
            yield return line;
        }
    }

    /// <summary>
    /// UTF-8 that throws on invalid bytes. With its byte order mark as preamble the reader skips a leading UTF-8 mark and
    /// keeps this decoder; a UTF-16 mark is still detected, as File.ReadLines detects it.
    /// </summary>
    private static readonly UTF8Encoding Utf8 = new(encoderShouldEmitUTF8Identifier: true, throwOnInvalidBytes: true);

    /// <summary>The 1-based number of the first line of <paramref name="path"/> that is not valid UTF-8 (only read on failure).</summary>
    private static int FirstInvalidLine(string path)
    {
        var bytes = File.ReadAllBytes(path);
        int line = 1, start = 0;
        for (int i = 0; i <= bytes.Length; i++)
        {
            if (i < bytes.Length && bytes[i] != (byte)'\n') continue;
            if (!Utf8Validation.IsValid(bytes.AsSpan(start, i - start))) return line;
            line++;
            start = i + 1;
        }
        return line;
    }
}
