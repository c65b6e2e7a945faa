using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
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
            var builder = WebApplication.CreateSlimBuilder();
            builder.WebHost.UseUrls("http://127.0.0.1:0");
            builder.Logging.ClearProviders();
            var app = builder.Build();
            var server = new ModelServer(app);
            app.MapGet("/models/model.zip", (HttpContext context) =>
            {
                if (server.Fail) return Results.StatusCode(500);
                var etag = server._etag;
                if (context.Request.Headers.IfNoneMatch.ToString() == etag)
                {
                    Interlocked.Increment(ref server.NotModified);
                    return Results.StatusCode(304);
                }
                Interlocked.Increment(ref server.Full);
                context.Response.Headers.ETag = etag;
                return Results.Bytes(server._bytes, "application/zip");
            });
            await app.StartAsync();
            var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Single();
            server.ModelUri = new Uri(new Uri(address), "/models/model.zip");
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
}
