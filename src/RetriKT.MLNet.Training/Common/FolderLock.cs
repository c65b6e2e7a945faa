using System.Globalization;
using System.Text.Json;

namespace RetriKT.MLNet.Common;

/// <summary>
/// One process at a time in a folder of checkpoints: the operating system's lock on a lock file in it (FileShare.None:
/// an exclusive flock on Unix, a sharing lock on Windows; released when the process ends, even when it is killed), with
/// an owner file beside it that says who holds it, for the second process's message. Two runs in one folder each
/// overwrote the other's checkpoints, and nothing stopped the second.
/// </summary>
internal sealed class FolderLock : IDisposable
{
    private readonly FileStream _lock;
    private readonly string _ownerPath;

    private FolderLock(FileStream held, string ownerPath) => (_lock, _ownerPath) = (held, ownerPath);

    /// <summary>
    /// Takes <paramref name="folder"/> (created if missing) through its file <paramref name="fileName"/>, or throws
    /// <see cref="IOException"/> with the line <paramref name="busy"/> makes of the holder ("pid N, since T UTC: command").
    /// </summary>
    /// <param name="folder">The folder to hold.</param>
    /// <param name="fileName">The lock file's name in it (the owner file is this name + ".owner").</param>
    /// <param name="command">What this process runs, shown to a second process.</param>
    /// <param name="busy">The message of a refusal, from the holder's description.</param>
    public static FolderLock Acquire(string folder, string fileName, string command, Func<string, string> busy)
    {
        Directory.CreateDirectory(folder);
        string path = Path.Combine(folder, fileName), ownerPath = path + ".owner";
        FileStream held;
        try { held = new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None); }
        catch (IOException) { throw new IOException(busy(Owner(ownerPath))); }
        var owner = new { pid = Environment.ProcessId, startedUtc = DateTime.UtcNow.ToString("yyyy-MM-dd HH:mm:ss", CultureInfo.InvariantCulture), command };
        string temp = $"{ownerPath}.{Environment.ProcessId}.tmp";
        File.WriteAllText(temp, JsonSerializer.Serialize(owner));
        File.Move(temp, ownerPath, overwrite: true);
        return new FolderLock(held, ownerPath);
    }

    /// <summary>"pid N, since T UTC: command", or what is known when the owner file is missing or damaged.</summary>
    private static string Owner(string ownerPath)
    {
        try
        {
            using var json = JsonDocument.Parse(File.ReadAllText(ownerPath));
            var root = json.RootElement;
            return $"pid {root.GetProperty("pid").GetInt32()}, since {root.GetProperty("startedUtc").GetString()} UTC: {root.GetProperty("command").GetString()}";
        }
        catch (Exception e) when (e is IOException or JsonException or KeyNotFoundException or InvalidOperationException)
        {
            return "its owner file is missing or unreadable";
        }
    }

    /// <summary>Releases the folder (the owner file goes first, so no reader names a process that has let go).</summary>
    public void Dispose()
    {
        try { File.Delete(_ownerPath); } catch (IOException) { }
        _lock.Dispose();
    }
}
