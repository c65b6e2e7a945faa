using RetriKT.MLNet.Common;

namespace RetriKT.Evaluation;

/// <summary>
/// One harness process per cache folder. Two runs on one cache build the same teacher into the same checkpoints and
/// extract the same stores into the same files, each overwriting the other's progress; nothing stopped the second. The
/// lock is the library's <see cref="FolderLock"/> on <c>harness.lock</c> in the cache; <c>harness.lock.owner</c> beside it
/// says who holds it, for the message.
/// </summary>
public sealed class CacheLock : IDisposable
{
    /// <summary>The lock file's name in the cache folder.</summary>
    public const string FileName = "harness.lock";

    private readonly FolderLock _lock;

    private CacheLock(FolderLock held) => _lock = held;

    /// <summary>
    /// Takes the cache, or throws <see cref="IOException"/> with one line naming the process that holds it and what to do.
    /// </summary>
    /// <param name="cacheRoot">The cache folder (<c>--cache</c>); created if missing.</param>
    /// <param name="command">What this process runs, shown to a second process.</param>
    public static CacheLock Acquire(string cacheRoot, string command) => new(FolderLock.Acquire(cacheRoot, FileName, command, owner =>
        $"Another harness process ({owner}) is using the cache {cacheRoot}; two runs there would overwrite " +
        "each other's teacher and store checkpoints. Wait for it to finish, or give this run its own --cache <folder> " +
        "(shipped teachers are shared; a teacher built in another cache is built again there)."));

    /// <summary>Releases the cache.</summary>
    public void Dispose() => _lock.Dispose();
}
