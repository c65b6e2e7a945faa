using Microsoft.ML;
using RetriKT.MLNet.Common;
using TorchSharp;

namespace RetriKT.MLNet.Tests.Foundation;

public class DevicePolicyTests
{
    [Fact]
    public void CpuIsTheDefault()
    {
        Assert.Equal(DeviceType.CPU, TorchDevices.Resolve(gpuDeviceId: null, fallbackToCpu: false).type);
    }

    [Fact]
    public void AskingForCudaWithoutABackendFailsClearlyUnlessFallbackIsAllowed()
    {
        if (torch.cuda.is_available()) return; // on a CUDA machine the request is honoured instead
        var e = Assert.Throws<InvalidOperationException>(() => TorchDevices.Resolve(gpuDeviceId: 0, fallbackToCpu: false));
        Assert.Contains("GpuDeviceId = 0", e.Message);
        Assert.Contains("TorchSharp-cuda-linux", e.Message);

        var warnings = new List<string>();
        Assert.Equal(DeviceType.CPU, TorchDevices.Resolve(0, fallbackToCpu: true, warnings.Add).type);
        Assert.Single(warnings);
    }

    [Fact]
    public void MlContextSettingsSeedAndLogFlowThroughTheComponentHost()
    {
        var mlContext = new MLContext(seed: 123) { GpuDeviceId = torch.cuda.is_available() ? null : 0, FallbackToCpu = true };
        var messages = new List<string>();
        mlContext.Log += (_, e) => { lock (messages) messages.Add(e.Message); };
        var host = new ComponentHost(mlContext, "PolicyTest");
        Assert.Equal(123, host.Seed);
        Assert.Equal(7, new ComponentHost(mlContext, "PolicyTest", seed: 7).Seed);
        Assert.Equal(1, new ComponentHost(new MLContext(), "PolicyTest").Seed);
        Assert.Equal(DeviceType.CPU, host.ResolveDevice().type);
        host.Report("Stage", 5, 5, new Dictionary<string, double> { ["loss"] = 0.25 });
        lock (messages)
        {
            Assert.Contains(messages, m => m.Contains("[Stage] 5/5 loss=0.25"));
            if (!torch.cuda.is_available()) Assert.Contains(messages, m => m.Contains("Falling back to CPU"));
        }
    }

    [Fact]
    public void CancellationFromTheContextOrTheTokenStopsWork()
    {
        var mlContext = new MLContext();
        var host = new ComponentHost(mlContext, "CancelTest");
        host.CheckAlive();
        RetriKT.MLNet.Bridge.MlNetEnvironment.CancelExecution(mlContext);
        Assert.ThrowsAny<OperationCanceledException>(() => host.Report("Stage", 1, 10));

        using var cts = new CancellationTokenSource();
        var tokenHost = new ComponentHost(new MLContext(), "CancelTest", cancellation: cts.Token);
        tokenHost.CheckAlive();
        cts.Cancel();
        Assert.ThrowsAny<OperationCanceledException>(() => tokenHost.CheckAlive());
    }
}
