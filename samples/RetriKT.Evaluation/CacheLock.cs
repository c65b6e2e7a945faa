using System.Diagnostics;
using System.Globalization;
using System.Text.Json;

namespace RetriKT.Evaluation;

/// <summary>
/// One harness process per cache folder. Two runs on one cache build the same teacher into the same checkpoints and
/// extract the same stores into the same files, each overwriting the other's progress; nothing stopped the second. The
/// lock is the operating system's lock on <c>harness.lock</c> in the cache (released when the process ends, even when it
/// is killed); <c>harness.lock.owner</c> beside it says who holds it, for the message.
/// </summary>
public sealed class CacheLock : IDisposable
{
    /// <summary>The lock file's name in the cache folder.</summary>
    public const string FileName = "harness.lock";

    private readonly FileStream _lock;
    private readonly string _ownerPath;

    private CacheLock(FileStream held, string ownerPath) => (_lock, _ownerPath) = (held, ownerPath);

    /// <summary>
    /// Takes the cache, or throws <see cref="IOException"/> with one line naming the process that holds it and what to do.
    /// </summary>
    /// <param name="cacheRoot">The cache folder (<c>--cache</c>); created if missing.</param>
    /// <param name="command">What this process runs, shown to a second process.</param>
    public static CacheLock Acquire(string cacheRoot, string command)
    {
        Directory.CreateDirectory(cacheRoot);
        string path = Path.Combine(cacheRoot, FileName), ownerPath = path + ".owner";
        FileStream held;
        // FileShare.None is an exclusive flock on Unix and a sharing lock on Windows: a second opener fails at once.
        try { held = new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None); }
        catch (IOException)
        {
            throw new IOException($"Another harness process ({Owner(ownerPath)}) is using the cache {cacheRoot}; two runs there would overwrite " +
                                  "each other's teacher and store checkpoints. Wait for it to finish, or give this run its own --cache <folder> " +
                                  "(shipped teachers are shared; a teacher built in another cache is built again there).");
        }
        var owner = new { pid = Environment.ProcessId, startedUtc = DateTime.UtcNow.ToString("yyyy-MM-dd HH:mm:ss", CultureInfo.InvariantCulture), command };
        string temp = $"{ownerPath}.{Environment.ProcessId}.tmp";
        File.WriteAllText(temp, JsonSerializer.Serialize(owner));
        File.Move(temp, ownerPath, overwrite: true);
        return new CacheLock(held, ownerPath);
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

    /// <summary>Releases the cache (the owner file goes first, so no reader names a process that has let go).</summary>
    public void Dispose()
    {
        try { File.Delete(_ownerPath); } catch (IOException) { }
        _lock.Dispose();
    }
}
