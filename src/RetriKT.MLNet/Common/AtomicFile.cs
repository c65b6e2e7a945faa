using System.Text;

namespace RetriKT.MLNet.Common;

/// <summary>
/// Atomic file writes, the one implementation behind every file this library writes whole (model.zip, knowledge stores,
/// checkpoints' headers, teacher weights, metrics): a temp file of its own beside the target (two writers never share
/// one), flushed to disk, then renamed over the target. A reader never sees half a file, and a failed or interrupted
/// write leaves the previous file in place and no temp file behind.
/// </summary>
internal static class AtomicFile
{
    /// <summary>
    /// Writes <paramref name="path"/> through <paramref name="write"/>. The folder is created when missing, unless
    /// <paramref name="createFolder"/> is false: then a missing folder fails naming it.
    /// </summary>
    public static void Write(string path, Action<FileStream> write, bool createFolder = true) => WriteVia(path, temp =>
    {
        using var fs = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16);
        write(fs);
        fs.Flush(true);
    }, createFolder);

    /// <summary>
    /// Writes <paramref name="path"/> through <paramref name="writeTemp"/>, which writes the file name it is given (for a
    /// writer that takes a path, such as libtorch's optimizer state); the same temp file, flush to disk and rename as
    /// <see cref="Write(string, Action{FileStream}, bool)"/>.
    /// </summary>
    public static void WriteVia(string path, Action<string> writeTemp, bool createFolder = true)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        var full = Path.GetFullPath(path);
        var folder = Path.GetDirectoryName(full)!;
        if (createFolder) Directory.CreateDirectory(folder);
        else if (!Directory.Exists(folder))
            throw new DirectoryNotFoundException($"Cannot write '{full}': the folder '{folder}' does not exist.");
        var temp = full + "." + Guid.NewGuid().ToString("N")[..8] + ".tmp";
        try
        {
            writeTemp(temp);
            if (!File.Exists(temp)) throw new IOException($"Writing '{full}' left no file at '{temp}'.");
            using (var written = new FileStream(temp, FileMode.Open, FileAccess.ReadWrite, FileShare.None)) written.Flush(true);
            File.Move(temp, full, overwrite: true);
        }
        finally
        {
            if (File.Exists(temp)) File.Delete(temp);
        }
    }

    public static void WriteAllText(string path, string text) => Write(path, fs => fs.Write(Encoding.UTF8.GetBytes(text)));
}
