using RetriKT.MLNet.Common;

namespace RetriKT.MLNet.Tests.Infrastructure;

/// <summary>
/// Progress reported on the reporting thread itself, in order: <see cref="Progress{T}"/> posts to the thread pool, so a
/// test could read its reports late or act on them (a cancel at step 4) after the run has gone further.
/// </summary>
public sealed class SyncProgress(Action<TrainingProgress> report) : IProgress<TrainingProgress>
{
    /// <inheritdoc/>
    public void Report(TrainingProgress value) => report(value);
}
