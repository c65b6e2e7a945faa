namespace RetriKT.MLNet.Common;

/// <summary>
/// The lock an extraction run holds on its checkpoint (white box and black box alike): two runs appending to one
/// checkpoint would interleave their batches, so the second is refused while the first runs.
/// </summary>
internal static class CheckpointLock
{
    /// <summary>
    /// Takes <c>{path}.lock</c> exclusively (FileShare.None: a lock the OS enforces on Windows and .NET takes with flock
    /// on Unix), so readers of the checkpoint itself stay free to read it during the run. The folder must exist. Dispose the
    /// stream to release it (the lock file is deleted then).
    /// </summary>
    /// <exception cref="InvalidOperationException">Another run holds the lock.</exception>
    public static FileStream Take(string path)
    {
        var lockPath = path + ".lock";
        try { return new FileStream(lockPath, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None, 1, FileOptions.DeleteOnClose); }
        // The sharing violation's HResult is the OS's own (32 on Windows, the errno EWOULDBLOCK on Unix): a lock file that
        // exists and cannot be opened with FileShare.None is one another run holds.
        catch (IOException e) when (e is not (FileNotFoundException or DirectoryNotFoundException) && File.Exists(lockPath))
        {
            throw new InvalidOperationException($"{path}: another extraction run is using this checkpoint (it holds {lockPath}); wait for it to end, or give this run another CheckpointPath.", e);
        }
    }
}
