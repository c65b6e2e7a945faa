using System.Text;

namespace RetriKT.MLNet.Tests.Infrastructure;

/// <summary>
/// Real files with a byte that is not UTF-8 (as a file saved as Latin-1 or Windows-1252 holds), for the readers of user
/// files that must refuse them with one line naming the file, the line and the byte (<c>Utf8TextFile</c>).
/// </summary>
public static class InvalidUtf8
{
    /// <summary>Writes the lines as UTF-8 with the byte 0xFF in place of the '\u00ff' of line 3 (1-based).</summary>
    public static void WriteWithInvalidByteOnLine3(string path, params string[] lines)
    {
        Assert.Contains('\u00ff', lines[2]);
        var bytes = new List<byte>();
        for (int i = 0; i < lines.Length; i++)
        {
            var line = lines[i] + "\n";
            if (i == 2)
                foreach (var c in line) bytes.AddRange(c == '\u00ff' ? [0xFF] : Encoding.UTF8.GetBytes(c.ToString()));
            else bytes.AddRange(Encoding.UTF8.GetBytes(line));
        }
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllBytes(path, [.. bytes]);
    }

    /// <summary>The message for the file of <see cref="WriteWithInvalidByteOnLine3"/>.</summary>
    public static string Expected(string path) => $"{path} line 3: expected UTF-8 text, found byte 0xFF; save the text as UTF-8.";
}
