using Microsoft.ML.Runtime;
using RetriKT.MLNet.Bridge;

namespace RetriKT.MLNet.Common;

/// <summary>Progress of a long-running RetriKT stage (training, generation, extraction).</summary>
/// <param name="Stage">Stage name, for example "Pretrain" or "PPO".</param>
/// <param name="Step">Steps done (1-based after the first step completes).</param>
/// <param name="TotalSteps">Steps planned for the stage.</param>
/// <param name="Metrics">Latest metric values of the stage (loss, reward, ...).</param>
public sealed record TrainingProgress(string Stage, long Step, long TotalSteps, IReadOnlyDictionary<string, double> Metrics)
{
    /// <summary>Fraction done in [0, 1].</summary>
    public double Fraction => TotalSteps <= 0 ? 1 : Math.Clamp((double)Step / TotalSteps, 0, 1);
}

/// <summary>
/// The policy every RetriKT component shares, in one place:
/// <list type="bullet">
/// <item>Device (training assembly only; the runtime computes in managed code on the CPU): <c>TorchDevices.ResolveDevice</c>
/// reads <see cref="Settings"/>: CPU unless <c>MLContext.GpuDeviceId</c> is set; then CUDA device N when TorchSharp has
/// CUDA, CPU with a warning when <c>MLContext.FallbackToCpu</c> is true (ML.NET's default), otherwise a clear error.</item>
/// <item>Seed: the component option if given, else the MLContext seed, else 1 (training is repeatable by default).</item>
/// <item>Logging: through the ML.NET channel, so <c>MLContext.Log</c> subscribers see it.</item>
/// <item>Progress: logged every <see cref="ProgressLogInterval"/> and reported to an optional <see cref="IProgress{T}"/>.</item>
/// <item>Cancellation: <c>MLContext.CancelExecution()</c> and an optional <see cref="CancellationToken"/>.</item>
/// </list>
/// </summary>
internal sealed class ComponentHost
{
    private readonly IProgress<TrainingProgress>? _progress;
    private readonly CancellationToken _cancellation;
    private DateTime _lastProgressLog = DateTime.MinValue;

    public ComponentHost(IHostEnvironment env, string name, int? seed = null,
        IProgress<TrainingProgress>? progress = null, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(env);
        Host = env.Register(name);
        Settings = MlNetEnvironment.Settings(env);
        Seed = seed ?? Settings.Seed ?? 1;
        _progress = progress;
        _cancellation = cancellation;
    }

    public IHost Host { get; }
    public HostSettings Settings { get; }
    public int Seed { get; }
    public TimeSpan ProgressLogInterval { get; init; } = TimeSpan.FromSeconds(2);

    public void Info(string message) { using var ch = Host.Start("Info"); ch.Info(MessageSensitivity.None, message); }
    public void Warning(string message) { using var ch = Host.Start("Warning"); ch.Warning(MessageSensitivity.None, message); }
    public void Trace(string message) { using var ch = Host.Start("Trace"); ch.Trace(MessageSensitivity.None, message); }

    /// <summary>Throws <see cref="OperationCanceledException"/> when the MLContext or the token was cancelled.</summary>
    public void CheckAlive()
    {
        _cancellation.ThrowIfCancellationRequested();
        MlNetEnvironment.CheckAlive(Host);
    }

    /// <summary>Checks cancellation, reports progress, and logs it at most every <see cref="ProgressLogInterval"/> (and at the end).</summary>
    public void Report(string stage, long step, long total, IReadOnlyDictionary<string, double>? metrics = null)
    {
        CheckAlive();
        var report = new TrainingProgress(stage, step, total, metrics ?? new Dictionary<string, double>());
        _progress?.Report(report);
        var now = DateTime.UtcNow;
        if (step >= total || now - _lastProgressLog >= ProgressLogInterval)
        {
            _lastProgressLog = now;
            var values = string.Join(" ", report.Metrics.Select(kv => $"{kv.Key}={kv.Value:G4}"));
            Info($"[{stage}] {step}/{total} {values}".TrimEnd());
        }
    }
}
