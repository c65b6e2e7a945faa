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

    /// <summary>
    /// Puts the finished folder <paramref name="finished"/> at <paramref name="destination"/> (beside it, on the same file
    /// system), replacing a folder there: the old folder is renamed aside first and deleted after. A recursive delete in
    /// place, stopped midway, left a folder that still looked finished (a done marker or config.json without the weights
    /// it vouched for); now a stop leaves either the old folder, no folder, or the new one, and a reader that had the old
    /// one open keeps reading it whole.
    /// </summary>
    public static void ReplaceDirectory(string finished, string destination)
    {
        var full = Path.GetFullPath(destination).TrimEnd(Path.DirectorySeparatorChar);
        string? aside = null;
        if (Directory.Exists(full))
        {
            aside = full + ".old-" + Guid.NewGuid().ToString("N")[..8];
            Directory.Move(full, aside);
        }
        try { Directory.Move(finished, full); }
        catch
        {
            if (aside is not null && !Directory.Exists(full)) Directory.Move(aside, full); // the old folder back, as it was
            throw;
        }
        if (aside is not null) Directory.Delete(aside, recursive: true);
    }
}
