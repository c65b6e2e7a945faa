using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace RetriKT.MLNet.Hosting;

/// <summary>Adds models to a <see cref="PredictionEnginePool{TData, TPrediction}"/> registration.</summary>
/// <typeparam name="TData">The input type of the engines.</typeparam>
/// <typeparam name="TPrediction">The output type of the engines.</typeparam>
public class PredictionEnginePoolBuilder<TData, TPrediction>
    where TData : class
    where TPrediction : class, new()
{
    /// <summary>Wraps <paramref name="services"/>.</summary>
    public PredictionEnginePoolBuilder(IServiceCollection services)
    {
        Services = services ?? throw new ArgumentNullException(nameof(services));
    }

    /// <summary>The service collection being configured.</summary>
    public IServiceCollection Services { get; }
}

/// <summary><c>FromFile</c>/<c>FromUri</c> (same overloads and defaults as Microsoft.Extensions.ML) and <c>WarmUpOnStart</c>.</summary>
public static class BuilderExtensions
{
    /// <summary>Default interval between ETag polls of a <c>FromUri</c> model (as in the original).</summary>
    public static readonly TimeSpan DefaultUriPollingPeriod = TimeSpan.FromMinutes(5);

    /// <summary>Serves the default model from <paramref name="filePath"/>, reloading it when the file changes.</summary>
    public static PredictionEnginePoolBuilder<TData, TPrediction> FromFile<TData, TPrediction>(
        this PredictionEnginePoolBuilder<TData, TPrediction> builder, string filePath)
        where TData : class where TPrediction : class, new()
        => builder.FromFile(string.Empty, filePath, watchForChanges: true);

    /// <summary>Serves the default model from <paramref name="filePath"/>.</summary>
    public static PredictionEnginePoolBuilder<TData, TPrediction> FromFile<TData, TPrediction>(
        this PredictionEnginePoolBuilder<TData, TPrediction> builder, string filePath, bool watchForChanges)
        where TData : class where TPrediction : class, new()
        => builder.FromFile(string.Empty, filePath, watchForChanges);

    /// <summary>Serves model <paramref name="modelName"/> from <paramref name="filePath"/>, reloading it when the file changes.</summary>
    public static PredictionEnginePoolBuilder<TData, TPrediction> FromFile<TData, TPrediction>(
        this PredictionEnginePoolBuilder<TData, TPrediction> builder, string modelName, string filePath)
        where TData : class where TPrediction : class, new()
        => builder.FromFile(modelName, filePath, watchForChanges: true);

    /// <summary>
    /// Serves model <paramref name="modelName"/> (<c>""</c> = the default model) from <paramref name="filePath"/>. With
    /// <paramref name="watchForChanges"/>, a new file is picked up whether it is copied over the old one or renamed
    /// onto it (atomic deployment), once the file has been quiet for <see cref="MLOptions.ReloadDebounce"/>.
    /// </summary>
    public static PredictionEnginePoolBuilder<TData, TPrediction> FromFile<TData, TPrediction>(
        this PredictionEnginePoolBuilder<TData, TPrediction> builder, string modelName, string filePath, bool watchForChanges)
        where TData : class where TPrediction : class, new()
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentNullException.ThrowIfNull(modelName);
        ArgumentException.ThrowIfNullOrWhiteSpace(filePath);
        return builder.AddModel(modelName, (sp, ml) =>
        {
            var loader = new FileModelLoader(ml.MLContext, LoggerFor<FileModelLoader>(sp), ml.ReloadDebounce);
            return Started(loader, () => loader.Start(filePath, watchForChanges));
        });
    }

    /// <summary>Serves the default model downloaded from <paramref name="uri"/>, polling it every 5 minutes.</summary>
    public static PredictionEnginePoolBuilder<TData, TPrediction> FromUri<TData, TPrediction>(
        this PredictionEnginePoolBuilder<TData, TPrediction> builder, string uri)
        where TData : class where TPrediction : class, new()
        => builder.FromUri(string.Empty, new Uri(uri), DefaultUriPollingPeriod);

    /// <summary>Serves model <paramref name="modelName"/> downloaded from <paramref name="uri"/>, polling it every 5 minutes.</summary>
    public static PredictionEnginePoolBuilder<TData, TPrediction> FromUri<TData, TPrediction>(
        this PredictionEnginePoolBuilder<TData, TPrediction> builder, string modelName, string uri)
        where TData : class where TPrediction : class, new()
        => builder.FromUri(modelName, new Uri(uri), DefaultUriPollingPeriod);

    /// <summary>Serves model <paramref name="modelName"/> downloaded from <paramref name="uri"/>, polling it every 5 minutes.</summary>
    public static PredictionEnginePoolBuilder<TData, TPrediction> FromUri<TData, TPrediction>(
        this PredictionEnginePoolBuilder<TData, TPrediction> builder, string modelName, Uri uri)
        where TData : class where TPrediction : class, new()
        => builder.FromUri(modelName, uri, DefaultUriPollingPeriod);

    /// <summary>Serves the default model downloaded from <paramref name="uri"/>, polling it every <paramref name="period"/>.</summary>
    public static PredictionEnginePoolBuilder<TData, TPrediction> FromUri<TData, TPrediction>(
        this PredictionEnginePoolBuilder<TData, TPrediction> builder, string uri, TimeSpan period)
        where TData : class where TPrediction : class, new()
        => builder.FromUri(string.Empty, new Uri(uri), period);

    /// <summary>Serves model <paramref name="modelName"/> downloaded from <paramref name="uri"/>, polling it every <paramref name="period"/>.</summary>
    public static PredictionEnginePoolBuilder<TData, TPrediction> FromUri<TData, TPrediction>(
        this PredictionEnginePoolBuilder<TData, TPrediction> builder, string modelName, string uri, TimeSpan period)
        where TData : class where TPrediction : class, new()
        => builder.FromUri(modelName, new Uri(uri), period);

    /// <summary>
    /// Serves model <paramref name="modelName"/> downloaded from <paramref name="uri"/>. Every <paramref name="period"/>
    /// a conditional GET (If-None-Match / If-Modified-Since) asks for a newer model; a changed ETag (or, without
    /// one, changed content) is loaded and swapped in. Download or load errors are logged and the current model keeps serving.
    /// </summary>
    public static PredictionEnginePoolBuilder<TData, TPrediction> FromUri<TData, TPrediction>(
        this PredictionEnginePoolBuilder<TData, TPrediction> builder, string modelName, Uri uri, TimeSpan period)
        where TData : class where TPrediction : class, new()
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentNullException.ThrowIfNull(modelName);
        ArgumentNullException.ThrowIfNull(uri);
        if (period <= TimeSpan.Zero) throw new ArgumentOutOfRangeException(nameof(period), period, "The polling period must be positive.");
        return builder.AddModel(modelName, (sp, ml) =>
        {
            var loader = new UriModelLoader(ml.MLContext, LoggerFor<UriModelLoader>(sp), ml.HttpMessageHandlerFactory);
            return Started(loader, () => loader.Start(uri, period));
        });
    }

    /// <summary>
    /// Runs <paramref name="start"/> and returns <paramref name="loader"/>; a loader that fails to start is disposed (its
    /// watcher, timer or HTTP client), since the pool does not keep it and tries again with a new one on the next request.
    /// </summary>
    private static TLoader Started<TLoader>(TLoader loader, Action start) where TLoader : ModelLoader, IDisposable
    {
        try
        {
            start();
            return loader;
        }
        catch
        {
            loader.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Loads every configured model (and creates one engine for each) when the host starts, before the server takes
    /// requests, instead of on first use. Needs a generic host (ASP.NET Core or <c>Host.CreateApplicationBuilder</c>).
    /// </summary>
    public static PredictionEnginePoolBuilder<TData, TPrediction> WarmUpOnStart<TData, TPrediction>(
        this PredictionEnginePoolBuilder<TData, TPrediction> builder)
        where TData : class where TPrediction : class, new()
    {
        ArgumentNullException.ThrowIfNull(builder);
        builder.Services.TryAddEnumerable(
            ServiceDescriptor.Singleton<IHostedService, PredictionEnginePoolWarmUpService<TData, TPrediction>>());
        return builder;
    }

    private static PredictionEnginePoolBuilder<TData, TPrediction> AddModel<TData, TPrediction>(
        this PredictionEnginePoolBuilder<TData, TPrediction> builder, string modelName, Func<IServiceProvider, MLOptions, ModelLoader> createLoader)
        where TData : class where TPrediction : class, new()
    {
        builder.Services.Configure<PredictionEnginePoolRegistry<TData, TPrediction>>(r => r.ModelNames.Add(modelName));
        // The pool asks the options factory once per model name, so the loader (watcher/poller) is started once.
        builder.Services.AddOptions<PredictionEnginePoolOptions<TData, TPrediction>>(modelName)
            .Configure<IServiceProvider, IOptions<MLOptions>>((options, sp, ml) => options.ModelLoader = createLoader(sp, ml.Value));
        return builder;
    }

    private static ILogger LoggerFor<T>(IServiceProvider sp) =>
        (ILogger?)sp.GetService<ILoggerFactory>()?.CreateLogger<T>() ?? Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance;
}

/// <summary>Loads every configured model of a pool when the host starts (registered by <c>WarmUpOnStart()</c>).</summary>
internal sealed class PredictionEnginePoolWarmUpService<TData, TPrediction>(PredictionEnginePool<TData, TPrediction> pool) : IHostedService
    where TData : class
    where TPrediction : class, new()
{
    public Task StartAsync(CancellationToken cancellationToken) =>
        // A load cannot be cancelled once started (a download that gets no answer waits up to the HTTP timeout, 5
        // minutes): stop waiting when start-up is cancelled (Ctrl+C, a start timeout) so the host can stop; the load
        // ends on its own and the disposed pool drops what it loaded.
        Task.Run(() => pool.WarmUp(cancellationToken), CancellationToken.None).WaitAsync(cancellationToken);

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}
