using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using RetriKT.MLNet.Hosting.Tests.Infrastructure;
using RetriKT.MLNet.Tests.Infrastructure;
using RetriKT.WebApi;

namespace RetriKT.MLNet.Hosting.Tests;

/// <summary>Start-up cancelled while WarmUpOnStart waits for a model server that does not answer.</summary>
public class WarmUpCancellationTests
{
    [SharedDataFact]
    public async Task WarmUp_IsCancelledByTheStartToken_WhileADownloadHangs()
    {
        var (app, address) = await LocalHttpServer.StartAsync(a => a.MapGet("/hung.zip", async (HttpContext c) => { await Task.Delay(Timeout.Infinite, c.RequestAborted); }));
        await using var _ = app;

        var hb = Host.CreateApplicationBuilder();
        hb.Logging.ClearProviders();
        hb.Services.AddPredictionEnginePool<TextInput, TextPrediction>()
            .FromUri("remote", new Uri(address, "/hung.zip"), TimeSpan.FromMinutes(1))
            .WarmUpOnStart();
        var host = hb.Build();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(1));
        var starting = Task.Run(() => host.StartAsync(cts.Token));
        var done = await Task.WhenAny(starting, Task.Delay(10_000));
        Assert.True(done == starting, "host start ignores its cancellation while warm-up waits for a model server that does not answer");
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => starting);
        var disposing = Task.Run(host.Dispose);
        Assert.True(await Task.WhenAny(disposing, Task.Delay(10_000)) == disposing, "disposing the host hangs");
    }
}
