using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using RetriKT.WebApi;

namespace RetriKT.MLNet.Hosting.Tests.Infrastructure;

/// <summary>A pool from a plain service provider (no web server), as a console or worker app would use it.</summary>
public sealed class PoolHost : IDisposable
{
    private readonly ServiceProvider _provider;

    public PoolHost(Action<PredictionEnginePoolBuilder<TextInput, TextPrediction>> configure, Action<MLOptions>? options = null)
    {
        var services = new ServiceCollection();
        services.AddLogging(b => b.SetMinimumLevel(LogLevel.Debug).AddProvider(Logs));
        services.Configure<MLOptions>(o =>
        {
            o.ReloadDebounce = TimeSpan.FromMilliseconds(200);
            options?.Invoke(o);
        });
        configure(services.AddPredictionEnginePool<TextInput, TextPrediction>());
        _provider = services.BuildServiceProvider();
    }

    public LogCapture Logs { get; } = new();

    public PredictionEnginePool<TextInput, TextPrediction> Pool => _provider.GetRequiredService<PredictionEnginePool<TextInput, TextPrediction>>();

    public void Dispose() => _provider.Dispose();
}
