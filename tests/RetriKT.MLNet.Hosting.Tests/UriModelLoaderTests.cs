using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using RetriKT.MLNet.Hosting.Tests.Infrastructure;
using RetriKT.MLNet.Tests.Infrastructure;
using RetriKT.WebApi;

namespace RetriKT.MLNet.Hosting.Tests;

public class UriModelLoaderTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(15);

    /// <summary>A model server on 127.0.0.1 that answers conditional GETs with its current ETag.</summary>
    private sealed class ModelServer : IAsyncDisposable
    {
        private readonly WebApplication _app;
        private volatile byte[] _bytes = [];
        private volatile string _etag = "\"0\"";
        public volatile bool Fail;
        public int NotModified, Full;

        private ModelServer(WebApplication app) => _app = app;

        public Uri ModelUri { get; private set; } = null!;

        public void Publish(byte[] bytes, string version)
        {
            _bytes = bytes;
            _etag = $"\"{version}\"";
        }

        public static async Task<ModelServer> StartAsync()
        {
            ModelServer? server = null; // set before the address is known to anyone, so before any request
            var (app, address) = await LocalHttpServer.StartAsync(a => a.MapGet("/models/model.zip", (HttpContext context) =>
            {
                var s = server!;
                if (s.Fail) return Results.StatusCode(500);
                var etag = s._etag;
                if (context.Request.Headers.IfNoneMatch.ToString() == etag)
                {
                    Interlocked.Increment(ref s.NotModified);
                    return Results.StatusCode(304);
                }
                Interlocked.Increment(ref s.Full);
                context.Response.Headers.ETag = etag;
                return Results.Bytes(s._bytes, "application/zip");
            }));
            server = new ModelServer(app) { ModelUri = new Uri(address, "/models/model.zip") };
            return server;
        }

        public async ValueTask DisposeAsync() => await _app.DisposeAsync();
    }

    [SharedDataFact]
    public async Task FromUri_PollsWithETag_ReloadsOnANewVersion_AndKeepsServingThroughServerErrorsAndBadModels()
    {
        using var dir = new TempDir();
        var (v1, v2) = TestModels.Save(dir.Path, "uri");
        var answers1 = TestModels.SequentialAnswers(v1);
        var answers2 = TestModels.SequentialAnswers(v2);
        var text = TestModels.Sentences[0];
        await using var server = await ModelServer.StartAsync();
        server.Publish(await File.ReadAllBytesAsync(v1), "v1");
        var v1Before = DisposalProbeTransformer.WithTag("uri-v1").Count;

        using var host = new PoolHost(b => b.FromUri("remote", server.ModelUri, TimeSpan.FromMilliseconds(100)));
        var pool = host.Pool;
        Assert.True(Matches(answers1));
        var served = DisposalProbeTransformer.WithTag("uri-v1").Skip(v1Before).Single();

        // Unchanged ETag: 304s, no reload.
        Assert.True(Wait.Until(() => Volatile.Read(ref server.NotModified) >= 3, Timeout), "the loader does not poll");
        Assert.Equal(1, Volatile.Read(ref server.Full));
        Assert.Equal(1, pool.GetModelGeneration("remote"));

        // New version: downloaded once, swapped in, old model disposed.
        server.Publish(await File.ReadAllBytesAsync(v2), "v2");
        Assert.True(Wait.Until(() => pool.GetModelGeneration("remote") == 2, Timeout), "the new version was not loaded");
        Assert.True(Matches(answers2));
        // The loader retires the old generation just after it publishes the new one, on its own thread.
        Assert.True(Wait.Until(() => served.DisposeCount == 1, Timeout), $"the retired model was disposed {served.DisposeCount} times");

        // Server errors and a broken model: logged, v2 keeps serving.
        server.Fail = true;
        Assert.True(Wait.Until(() => host.Logs.Has(LogLevel.Error, "for a new version failed"), Timeout));
        server.Fail = false;
        server.Publish([1, 2, 3, 4], "broken");
        Assert.True(Wait.Until(() => host.Logs.Entries.Any(e => e.Level == LogLevel.Error && e.Exception is InvalidDataException), Timeout));
        await Task.Delay(300);
        Assert.Equal(2, pool.GetModelGeneration("remote"));
        Assert.True(Matches(answers2));

        bool Matches(Dictionary<string, Answer> answers)
        {
            var p = pool.Predict("remote", new TextInput { Text = text });
            return answers[text].Matches(p.PredictedLabel, p.Score);
        }
    }

    [SharedDataFact]
    public async Task FromUri_ADamagedVersionIsRefused_AndItsErrorClearsWhenTheServingVersionIsPublishedAgain()
    {
        using var dir = new TempDir();
        var (v1, _) = TestModels.Save(dir.Path, "uri-revert");
        var v1Bytes = await File.ReadAllBytesAsync(v1);
        await using var server = await ModelServer.StartAsync();
        server.Publish(v1Bytes, "v1");
        using var host = new PoolHost(b => b.FromUri("remote", server.ModelUri, TimeSpan.FromMilliseconds(100)));
        var pool = host.Pool;
        pool.Predict("remote", new TextInput { Text = TestModels.Sentences[0] });
        Assert.Null(pool.GetLastLoadError("remote"));

        // One changed byte: refused (ML.NET alone would load it as another model), v1 keeps serving.
        server.Publish(TestModels.Damaged(v1Bytes), "v2-damaged");
        Assert.True(Wait.Until(() => pool.GetLastLoadError("remote") is not null, Timeout), "the damaged version was not reported");
        var damaged = pool.GetLastLoadError("remote")!;
        Assert.True(damaged.Contains("ETag \"v2-damaged\") is not a loadable ML.NET model: part '", StringComparison.Ordinal), damaged);
        Assert.Contains("is damaged or was modified", pool.GetLastLoadError("remote"));
        Assert.Equal(1, pool.GetModelGeneration("remote"));

        // The server goes back to the serving bytes under a new ETag: nothing to reload, and nothing is wrong any more.
        server.Publish(v1Bytes, "v1-again");
        Assert.True(Wait.Until(() => pool.GetLastLoadError("remote") is null, Timeout), $"still reported: {pool.GetLastLoadError("remote")}");
        Assert.Equal(1, pool.GetModelGeneration("remote"));

        // A server error, then 304s for the serving version: the error clears too.
        server.Fail = true;
        Assert.True(Wait.Until(() => pool.GetLastLoadError("remote") is not null, Timeout), "the server error was not reported");
        int notModified = Volatile.Read(ref server.NotModified);
        server.Fail = false;
        Assert.True(Wait.Until(() => pool.GetLastLoadError("remote") is null, Timeout), $"still reported: {pool.GetLastLoadError("remote")}");
        Assert.True(Volatile.Read(ref server.NotModified) > notModified);
        Assert.Equal(1, pool.GetModelGeneration("remote"));
    }

    [SharedDataFact]
    public async Task FromUri_AFirstLoadThatFails_DisposesItsHttpClient_OnEveryTry()
    {
        await using var server = await ModelServer.StartAsync();
        server.Fail = true;
        int created = 0, disposed = 0;
        using (var host = new PoolHost(b => b.FromUri("remote", server.ModelUri, TimeSpan.FromMinutes(5)),
                   o => o.HttpMessageHandlerFactory = () => { Interlocked.Increment(ref created); return new CountingHandler(() => Interlocked.Increment(ref disposed)); }))
        {
            for (int i = 0; i < 5; i++)
                Assert.Throws<HttpRequestException>(() => host.Pool.GetPredictionEngine("remote"));
            Assert.Equal(5, created);
            Assert.Equal(5, disposed);
        }
    }

    private sealed class CountingHandler(Action onDispose) : DelegatingHandler(new HttpClientHandler())
    {
        protected override void Dispose(bool disposing)
        {
            if (disposing) onDispose();
            base.Dispose(disposing);
        }
    }
}
