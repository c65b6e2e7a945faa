using Microsoft.ML.Runtime;
using RetriKT.MLNet.Bridge;
using TorchSharp;

namespace RetriKT.MLNet.Common;

/// <summary>Device selection and native-backend checks for TorchSharp.</summary>
public static class TorchDevices
{
    /// <summary>Resolves the torch device of a component from its MLContext settings (the policy in <see cref="ComponentHost"/>).</summary>
    internal static torch.Device ResolveDevice(this ComponentHost host) => Resolve(host.Settings, host.Warning);

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
                "(TorchSharp-cpu, or TorchSharp-cuda-linux for CUDA) next to RetriKT.MLNet.Training. On Linux with a libstdc++ older " +
                "than GCC 13 (Debian 12, Ubuntu 22.04), RetriKT.MLNet.Training's build targets mark GLIBCXX_3.4.32 weak in the copy of " +
                "libLibTorchSharp.so in the output folder; check that the build printed 'RetriKT: marked GLIBCXX_3.4.32 weak' " +
                "or that RetriKTPatchTorchSharpNative is not false. See docs/TROUBLESHOOTING.md. Cause: " + e.Message, e);
        }
    }
}
