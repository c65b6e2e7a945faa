using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using RetriKT.MLNet.Hosting.Tests.Infrastructure;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.Hosting.Tests;

/// <summary>Shutdown while a named model's first load hangs.</summary>
public class DisposeDuringFirstLoadTests
{
    [SharedDataFact]
    public async Task DisposingThePool_WhileAFirstDownloadHangs_ReturnsPromptly()
    {
        var (app, address) = await LocalHttpServer.StartAsync(a => a.MapGet("/model.zip", async (HttpContext c) => { await Task.Delay(Timeout.Infinite, c.RequestAborted); }));
        await using var _ = app;

        var uri = new Uri(address, "/model.zip");
        var host = new PoolHost(b => b.FromUri("remote", uri, TimeSpan.FromMinutes(1)).FromUri("other", uri, TimeSpan.FromMinutes(1)));
        var pool = host.Pool;
        var renting = Task.Run(() => pool.GetPredictionEngine("remote"));
        await Task.Delay(1000);
        var disposing = Task.Run(host.Dispose);
        var done = await Task.WhenAny(disposing, Task.Delay(10_000));
        Assert.True(done == disposing, "disposing the pool (host shutdown) hangs while a first download of a named model hangs");
        Assert.Throws<ObjectDisposedException>(() => pool.GetPredictionEngine("other"));
        Assert.False(renting.IsCompleted);   // still downloading: ends when the model server goes away
        await app.StopAsync(new CancellationToken(canceled: true));
        await Assert.ThrowsAnyAsync<Exception>(() => renting);
    }
}
