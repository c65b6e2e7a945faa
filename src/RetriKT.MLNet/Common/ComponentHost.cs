using Microsoft.ML.Runtime;
using RetriKT.MLNet.Bridge;
using TorchSharp;

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
/// <item>Device: CPU unless <c>MLContext.GpuDeviceId</c> is set; then CUDA device N when TorchSharp has CUDA, CPU with
/// a warning when <c>MLContext.FallbackToCpu</c> is true (ML.NET's default), otherwise a clear error.</item>
/// <item>Seed: the component option if given, else the MLContext seed, else 1 (training is repeatable by default).</item>
/// <item>Logging: through the ML.NET channel, so <c>MLContext.Log</c> subscribers see it.</item>
/// <item>Progress: logged every <see cref="ProgressLogInterval"/> and reported to an optional <see cref="IProgress{T}"/>.</item>
/// <item>Cancellation: <c>MLContext.CancelExecution()</c> and an optional <see cref="CancellationToken"/>.</item>
/// </list>
/// </summary>
internal sealed class ComponentHost
{
    private readonly IHostEnvironment _env;
    private readonly IProgress<TrainingProgress>? _progress;
    private readonly CancellationToken _cancellation;
    private DateTime _lastProgressLog = DateTime.MinValue;

    public ComponentHost(IHostEnvironment env, string name, int? seed = null,
        IProgress<TrainingProgress>? progress = null, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(env);
        _env = env;
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

    /// <summary>Resolves the torch device for this component (see the class remarks for the policy).</summary>
    public torch.Device ResolveDevice() => TorchDevices.Resolve(Settings, Warning);

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

/// <summary>Device selection and native-backend checks for TorchSharp.</summary>
public static class TorchDevices
{
    /// <summary>
    /// Resolves the device from MLContext settings: <paramref name="gpuDeviceId"/> null → CPU; set → <c>cuda:N</c> when
    /// TorchSharp has a CUDA backend; otherwise CPU if <paramref name="fallbackToCpu"/>, else an exception that says why.
    /// </summary>
    public static torch.Device Resolve(int? gpuDeviceId, bool fallbackToCpu, Action<string>? warn = null)
        => Resolve(new HostSettings(gpuDeviceId, fallbackToCpu, null, null), warn);

    internal static torch.Device Resolve(HostSettings settings, Action<string>? warn)
    {
        EnsureNativeBackend();
        if (settings.GpuDeviceId is not int id) return torch.CPU;
        if (id < 0) throw new ArgumentOutOfRangeException(nameof(settings), $"MLContext.GpuDeviceId must be >= 0, found {id}.");
        if (torch.cuda.is_available())
        {
            int count = torch.cuda.device_count();
            if (id < count) return new torch.Device(DeviceType.CUDA, id);
            var outOfRange = $"MLContext.GpuDeviceId = {id}, but only {count} CUDA device(s) are visible.";
            if (!settings.FallbackToCpu) throw new InvalidOperationException(outOfRange);
            warn?.Invoke(outOfRange + " Falling back to CPU (MLContext.FallbackToCpu = true).");
            return torch.CPU;
        }
        var absent = $"MLContext.GpuDeviceId = {id} asks for CUDA, but TorchSharp has no CUDA backend here " +
                     "(the application references TorchSharp-cpu, or no NVIDIA driver is visible). " +
                     "Reference TorchSharp-cuda-linux (or libtorch-cuda-*) in the application, or leave GpuDeviceId unset.";
        if (!settings.FallbackToCpu) throw new InvalidOperationException(absent);
        warn?.Invoke(absent + " Falling back to CPU (MLContext.FallbackToCpu = true).");
        return torch.CPU;
    }

    private static volatile bool _nativeChecked;

    /// <summary>Loads TorchSharp's native backend once, turning load failures into one actionable message.</summary>
    public static void EnsureNativeBackend()
    {
        if (_nativeChecked) return;
        try
        {
            torch.InitializeDeviceType(DeviceType.CPU);
            _nativeChecked = true;
        }
        catch (Exception e) when (e is DllNotFoundException or TypeInitializationException or NotSupportedException or InvalidOperationException)
        {
            throw new InvalidOperationException(
                "TorchSharp's native backend could not be loaded. The application must reference a native package " +
                "(TorchSharp-cpu, or TorchSharp-cuda-linux for CUDA) next to RetriKT.MLNet. On Linux with a libstdc++ older " +
                "than GCC 13 (Debian 12, Ubuntu 22.04), RetriKT.MLNet's build targets mark GLIBCXX_3.4.32 weak in the copy of " +
                "libLibTorchSharp.so in the output folder; check that the build printed 'RetriKT: marked GLIBCXX_3.4.32 weak' " +
                "or that RetriKTPatchTorchSharpNative is not false. See docs/TROUBLESHOOTING.md. Cause: " + e.Message, e);
        }
    }
}
