using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using RetriKT.MLNet.Hosting.Tests.Infrastructure;
using RetriKT.MLNet.Tests.Infrastructure;
using RetriKT.WebApi;

namespace RetriKT.MLNet.Hosting.Tests;

/// <summary>One named model's first load hangs (its server does not answer): the other models are not held up.</summary>
public class HangingFirstLoadTests
{
    [SharedDataFact]
    public async Task AHangingFirstDownload_DoesNotHoldUpTheFirstUseOfAnotherModel()
    {
        using var dir = new TempDir();
        var (v1, _) = TestModels.Save(dir.Path, "hanging");
        var v1Bytes = await File.ReadAllBytesAsync(v1);
        var (app, address) = await LocalHttpServer.StartAsync(a =>
        {
            a.MapGet("/hung.zip", async (HttpContext c) => { await Task.Delay(Timeout.Infinite, c.RequestAborted); });
            a.MapGet("/good.zip", () => Results.Bytes(v1Bytes, "application/zip"));
        });
        await using var _ = app;

        using var host = new PoolHost(b => b
            .FromUri("hung", new Uri(address, "/hung.zip"), TimeSpan.FromMinutes(1))
            .FromUri("good", new Uri(address, "/good.zip"), TimeSpan.FromMinutes(1)));
        var pool = host.Pool;
        var hung = Task.Run(() => pool.GetPredictionEngine("hung"));
        await Task.Delay(500);
        var good = Task.Run(() => pool.Predict("good", new TextInput { Text = TestModels.Sentences[0] }));
        Assert.True(await Task.WhenAny(good, Task.Delay(10_000)) == good,
            "the first use of model 'good' waits for model 'hung''s first download (up to the 5-minute HTTP timeout)");
        await good;
        Assert.False(hung.IsCompleted);
        await app.StopAsync(new CancellationToken(canceled: true));
        await Assert.ThrowsAnyAsync<Exception>(() => hung);
    }
}
