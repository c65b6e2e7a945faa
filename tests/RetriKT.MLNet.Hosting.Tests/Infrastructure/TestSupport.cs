using System.Collections.Concurrent;
using System.Diagnostics;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using RetriKT.WebApi;

namespace RetriKT.MLNet.Hosting.Tests.Infrastructure;

/// <summary>Keeps every log entry in memory (tests assert that an error was logged).</summary>
public sealed class LogCapture : ILoggerProvider
{
    public ConcurrentQueue<(LogLevel Level, string Category, string Message, Exception? Exception)> Entries { get; } = new();

    public ILogger CreateLogger(string categoryName) => new Logger(this, categoryName);

    public void Dispose()
    {
    }

    public bool Has(LogLevel level, string contains) => Entries.Any(e => e.Level == level && e.Message.Contains(contains, StringComparison.Ordinal));

    private sealed class Logger(LogCapture owner, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
        public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Debug;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
            => owner.Entries.Enqueue((logLevel, category, formatter(state, exception), exception));
    }
}

/// <summary>The sample web API on real Kestrel at 127.0.0.1 (an ephemeral port).</summary>
public sealed class WebApiServer : IAsyncDisposable
{
    private WebApiServer(WebApplication app, Uri address, LogCapture logs)
    {
        App = app;
        Address = address;
        Logs = logs;
        Client = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = 64 }) { BaseAddress = address, Timeout = TimeSpan.FromSeconds(30) };
    }

    public WebApplication App { get; }
    public Uri Address { get; }
    public LogCapture Logs { get; }
    public HttpClient Client { get; }
    public PredictionEnginePool<TextInput, TextPrediction> Pool => App.Services.GetRequiredService<PredictionEnginePool<TextInput, TextPrediction>>();

    public static async Task<WebApiServer> StartAsync(string modelPath, params string[] extraArgs)
    {
        var logs = new LogCapture();
        string[] args = ["--urls", "http://127.0.0.1:0", "--ModelPath", modelPath, .. extraArgs];
        var app = WebApiApp.Build(args, b =>
        {
            b.Logging.ClearProviders();
            b.Logging.SetMinimumLevel(LogLevel.Debug);
            b.Logging.AddProvider(logs);
            b.Services.Configure<MLOptions>(o => o.ReloadDebounce = TimeSpan.FromMilliseconds(200));
        });
        await app.StartAsync();
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Single();
        return new WebApiServer(app, new Uri(address), logs);
    }

    public async ValueTask DisposeAsync()
    {
        Client.Dispose();
        await App.StopAsync();
        await App.DisposeAsync();
    }
}

public static class Wait
{
    /// <summary>Polls <paramref name="condition"/> every 25 ms until it holds or <paramref name="timeout"/> passes.</summary>
    public static bool Until(Func<bool> condition, TimeSpan timeout)
    {
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < timeout)
        {
            if (condition()) return true;
            Thread.Sleep(25);
        }
        return condition();
    }
}

/// <summary>A real HTTP server on 127.0.0.1 (a free port) serving the routes <c>map</c> adds: a model server in tests.</summary>
public static class LocalHttpServer
{
    /// <summary>Starts it; the caller disposes the app.</summary>
    public static async Task<(WebApplication App, Uri Address)> StartAsync(Action<WebApplication> map)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Logging.ClearProviders();
        var app = builder.Build();
        map(app);
        await app.StartAsync();
        return (app, new Uri(app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Single()));
    }
}

