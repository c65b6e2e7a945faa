using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Microsoft.ML;

namespace RetriKT.MLNet.Hosting;

/// <summary>Registers prediction engine pools (same entry points as Microsoft.Extensions.ML).</summary>
public static class ServiceCollectionExtensions
{
    /// <summary>
    /// Registers a singleton <see cref="PredictionEnginePool{TData, TPrediction}"/>; add its models with
    /// <c>FromFile</c>/<c>FromUri</c> on the returned builder.
    /// </summary>
    public static PredictionEnginePoolBuilder<TData, TPrediction> AddPredictionEnginePool<TData, TPrediction>(
        this IServiceCollection services)
        where TData : class
        where TPrediction : class, new()
    {
        ArgumentNullException.ThrowIfNull(services);
        services.AddRequiredPredictionEnginePoolServices();
        services.TryAddSingleton<PredictionEnginePool<TData, TPrediction>>();
        return new PredictionEnginePoolBuilder<TData, TPrediction>(services);
    }

    /// <summary>Registers a pool created by <paramref name="implementationFactory"/>.</summary>
    public static PredictionEnginePoolBuilder<TData, TPrediction> AddPredictionEnginePool<TData, TPrediction>(
        this IServiceCollection services, Func<IServiceProvider, PredictionEnginePool<TData, TPrediction>> implementationFactory)
        where TData : class
        where TPrediction : class, new()
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(implementationFactory);
        services.AddRequiredPredictionEnginePoolServices();
        services.TryAddSingleton(implementationFactory);
        return new PredictionEnginePoolBuilder<TData, TPrediction>(services);
    }

    /// <summary>Logging, options, and the forwarding of <see cref="MLContext.Log"/> to <c>ILogger&lt;MLContext&gt;</c>.</summary>
    public static IServiceCollection AddRequiredPredictionEnginePoolServices(this IServiceCollection services)
    {
        ArgumentNullException.ThrowIfNull(services);
        services.AddLogging();
        services.AddOptions();
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IPostConfigureOptions<MLOptions>, MLContextLogForwarding>());
        return services;
    }

    /// <summary>Forwards ML.NET's log to ILogger at Trace, subscribing only when Trace is on (ML.NET formats every
    /// message once anyone listens).</summary>
    private sealed class MLContextLogForwarding(ILogger<MLContext> logger) : IPostConfigureOptions<MLOptions>
    {
        public void PostConfigure(string? name, MLOptions options)
        {
            if (!logger.IsEnabled(LogLevel.Trace)) return;
            options.MLContext.Log += (_, e) => logger.LogTrace("{Message}", e.Message);
        }
    }
}
