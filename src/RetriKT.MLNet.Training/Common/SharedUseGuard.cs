namespace RetriKT.MLNet.Common;

/// <summary>
/// Lets any number of threads use a native resource (a module's weights, a tensor) at once, and makes its release wait
/// for the uses in flight: a Dispose that freed the tensors under another thread's forward pass or matmul gave that
/// thread garbage or a torch error instead of <see cref="ObjectDisposedException"/>. Uses that start after the release
/// throw <see cref="ObjectDisposedException"/> naming the owner.
/// </summary>
internal sealed class SharedUseGuard
{
    // Recursion: a use may call another member that takes a use (Encode reads Dimension, which reads the weights).
    private readonly ReaderWriterLockSlim _lock = new(LockRecursionPolicy.SupportsRecursion);
    private volatile bool _released;

    /// <summary>Whether the resource has been released.</summary>
    public bool IsReleased => _released;

    /// <summary>Starts a use; dispose the result to end it. Throws <see cref="ObjectDisposedException"/> naming <paramref name="ownerName"/> once released.</summary>
    public Use Enter(string ownerName)
    {
        _lock.EnterReadLock();
        if (!_released) return new Use(_lock);
        _lock.ExitReadLock();
        throw new ObjectDisposedException(ownerName);
    }

    /// <summary>Runs <paramref name="free"/> once, after every use in flight has ended; false when already released.</summary>
    public bool Release(Action free)
    {
        _lock.EnterWriteLock();
        try
        {
            if (_released) return false;
            _released = true;
            free();
            return true;
        }
        finally { _lock.ExitWriteLock(); }
    }

    /// <summary>One use in flight.</summary>
    public readonly struct Use(ReaderWriterLockSlim held) : IDisposable
    {
        /// <summary>Ends the use.</summary>
        public void Dispose() => held.ExitReadLock();
    }
}
