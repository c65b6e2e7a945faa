using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Primitives;
using Microsoft.ML;
using Microsoft.ML.Data;
using RetriKT.MLNet.Common;

namespace RetriKT.MLNet.Hosting;

/// <summary>
/// Pools <see cref="PredictionEngine{TSrc, TDst}"/> instances (not thread-safe) per model so a multi-threaded server
/// can predict without creating an engine per request. Same API as Microsoft.Extensions.ML's pool, with reload
/// semantics fixed: an engine always returns to the model generation it was created from, a replaced model is
/// disposed once its rented engines are back, a model that fails to load leaves the previous one serving, and the
/// pool is <see cref="IDisposable"/>.
/// </summary>
/// <typeparam name="TData">The input type (a class with the model's input columns).</typeparam>
/// <typeparam name="TPrediction">The output type (a class with the model's output columns).</typeparam>
public class PredictionEnginePool<TData, TPrediction> : IDisposable
    where TData : class
    where TPrediction : class, new()
{
    private readonly MLOptions _mlOptions;
    private readonly IOptionsFactory<PredictionEnginePoolOptions<TData, TPrediction>> _modelOptions;
    private readonly IReadOnlySet<string> _modelNames;
    private readonly bool _loaderConfiguredForAllNames;
    private readonly ILogger _logger;
    private readonly ConcurrentDictionary<string, ModelSlot> _slots = new(StringComparer.Ordinal);
    private readonly ConditionalWeakTable<PredictionEngine<TData, TPrediction>, EngineLease<TData, TPrediction>> _leases = new();
    private readonly Lock _slotCreation = new();
    private readonly ConcurrentDictionary<string, Lock> _configuredSlotCreation = new(StringComparer.Ordinal);
    private readonly ModelSlot? _defaultSlot;
    private int _disposed;

    private bool IsDisposed => Volatile.Read(ref _disposed) != 0;

    /// <summary>Creates the pool and loads the default model, if one is configured (named models load on first use
    /// or on <see cref="WarmUp"/>).</summary>
    /// <param name="serviceProvider">Provides logging and the configured model names.</param>
    /// <param name="mlOptions">The shared <see cref="MLOptions"/>.</param>
    /// <param name="modelOptions">Creates the named per-model options holding each model's loader.</param>
    public PredictionEnginePool(IServiceProvider serviceProvider, IOptions<MLOptions> mlOptions,
        IOptionsFactory<PredictionEnginePoolOptions<TData, TPrediction>> modelOptions)
    {
        ArgumentNullException.ThrowIfNull(serviceProvider);
        ArgumentNullException.ThrowIfNull(mlOptions);
        ArgumentNullException.ThrowIfNull(modelOptions);
        _mlOptions = mlOptions.Value;
        _modelOptions = modelOptions;
        var registry = serviceProvider.GetService<IOptions<PredictionEnginePoolRegistry<TData, TPrediction>>>()?.Value ?? new();
        (_modelNames, _loaderConfiguredForAllNames) = ModelNames(serviceProvider, registry);
        _logger = serviceProvider.GetService<ILoggerFactory>()?.CreateLogger<PredictionEnginePool<TData, TPrediction>>()
                  ?? NullLogger<PredictionEnginePool<TData, TPrediction>>.Instance;
        // Same as the original: the default model is loaded with the pool, so a bad path fails at start-up.
        _defaultSlot = TryGetOrCreateSlot(string.Empty);
    }

    /// <summary>The names of the models configured through the builder or with a custom loader (named options of
    /// <see cref="PredictionEnginePoolOptions{TData, TPrediction}"/>); <c>""</c> = the default model.</summary>
    public IReadOnlyCollection<string> ConfiguredModelNames => _modelNames;

    /// <summary>The current default model.</summary>
    /// <exception cref="ArgumentException">No default (unnamed) model is configured.</exception>
    public ITransformer GetModel() => DefaultSlot.Current.Model;

    /// <summary>The current model named <paramref name="modelName"/> (loads it on first use).</summary>
    /// <remarks>A model returned here is disposed after a reload once the engines rented from it are back; use
    /// <see cref="GetPredictionEngine(string)"/> to predict, not engines you create from this model yourself.</remarks>
    public ITransformer GetModel(string modelName) => GetSlot(modelName).Current.Model;

    /// <summary>How many times the model has been (re)loaded: 1 after the first load, +1 per successful reload.</summary>
    public long GetModelGeneration(string modelName = "") => GetSlot(modelName).Current.Number;

    /// <summary>
    /// The model that <paramref name="engine"/> (rented from this pool, not yet returned) was created from. Use it
    /// with the engine's prediction to build one response from one model generation: the pool's current model may
    /// already be a newer one. It stays usable (not disposed) until the engine is returned.
    /// </summary>
    /// <exception cref="ArgumentException">The engine was not rented from this pool.</exception>
    /// <exception cref="InvalidOperationException">The engine was already returned.</exception>
    public ITransformer GetModel(PredictionEngine<TData, TPrediction> engine) => RentedLease(engine).Generation.Model;

    /// <summary>The generation number of the model <paramref name="engine"/> (rented, not yet returned) was created from.</summary>
    /// <exception cref="ArgumentException">The engine was not rented from this pool.</exception>
    /// <exception cref="InvalidOperationException">The engine was already returned.</exception>
    public long GetModelGeneration(PredictionEngine<TData, TPrediction> engine) => RentedLease(engine).Generation.Number;

    /// <summary>
    /// Why the newest version of the model could not be loaded (damaged or deleted file, failed download, a model that
    /// does not fit <typeparamref name="TData"/>/<typeparamref name="TPrediction"/>) while an older generation keeps
    /// serving, as one printable line; null when the serving model is the newest. Health checks report it as Degraded.
    /// </summary>
    public string? GetLastLoadError(string modelName = "") => GetSlot(modelName).LastLoadError;

    /// <summary>Rents an engine of the default model; give it back with <see cref="ReturnPredictionEngine(PredictionEngine{TData, TPrediction})"/>.</summary>
    public PredictionEngine<TData, TPrediction> GetPredictionEngine() => Rent(DefaultSlot);

    /// <summary>Rents an engine of the model named <paramref name="modelName"/>; give it back with
    /// <see cref="ReturnPredictionEngine(string, PredictionEngine{TData, TPrediction})"/>.</summary>
    public PredictionEngine<TData, TPrediction> GetPredictionEngine(string modelName) => Rent(GetSlot(modelName));

    /// <summary>Gives back an engine rented from this pool (it goes back to the model generation it came from).</summary>
    public void ReturnPredictionEngine(PredictionEngine<TData, TPrediction> engine) => Return(null, engine);

    /// <summary>Gives back an engine rented with <see cref="GetPredictionEngine(string)"/>.</summary>
    /// <exception cref="ArgumentException">The engine was not rented from this pool, or from another model.</exception>
    /// <exception cref="InvalidOperationException">The engine was already returned.</exception>
    public void ReturnPredictionEngine(string modelName, PredictionEngine<TData, TPrediction> engine)
    {
        ArgumentNullException.ThrowIfNull(modelName);
        Return(modelName, engine);
    }

    /// <summary>
    /// Loads every configured model (<see cref="ConfiguredModelNames"/>) that is not loaded yet and creates one engine
    /// for each, so the first requests do not pay for loading. Called at start-up by the hosted service that
    /// <c>WarmUpOnStart()</c> registers. A loader configured for every name (<c>ConfigureAll</c>) names no model to load:
    /// that is logged as a warning.
    /// </summary>
    public void WarmUp(CancellationToken cancellationToken = default)
    {
        if (_loaderConfiguredForAllNames)
            _logger.LogWarning("Options of {Options} are configured for every name (ConfigureAll): warm-up loads only the models configured under a name.",
                typeof(PredictionEnginePoolOptions<TData, TPrediction>).Name);
        foreach (var name in _modelNames)
        {
            cancellationToken.ThrowIfCancellationRequested();
            // A name configured with other options and no loader is no model.
            if (TryGetOrCreateSlot(name) is null) continue;
            var engine = GetPredictionEngine(name);
            ReturnPredictionEngine(name, engine);
            _logger.LogInformation("Warmed up model '{ModelName}' (generation {Generation}).", name, GetModelGeneration(name));
        }
    }

    /// <summary>
    /// Stops watching for changes, disposes the loaders, and disposes each current model once the engines rented
    /// from it are back. Renting after this throws <see cref="ObjectDisposedException"/>; returning still works.
    /// </summary>
    public void Dispose()
    {
        Dispose(true);
        GC.SuppressFinalize(this);
    }

    /// <summary>Releases the models and loaders (see <see cref="Dispose()"/>).</summary>
    protected virtual void Dispose(bool disposing)
    {
        if (!disposing) return;
        // Not under a creation lock: a model being created holds it for as long as its first load takes (a hanging
        // download: up to the HTTP timeout), and shutdown must not wait for that. A slot added after this
        // enumeration sees IsDisposed and disposes itself (TryGetOrCreateSlot).
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        foreach (var slot in _slots.Values) slot.Dispose();
    }

    /// <summary>
    /// The builder's model names and the names of the other named configurations of the per-model options (a custom
    /// loader: <c>Configure&lt;PredictionEnginePoolOptions&lt;…&gt;&gt;(name, …)</c>, <c>AddOptions(name).Configure(…)</c>),
    /// and whether any configuration applies to every name (<c>ConfigureAll</c>: no name to warm up).
    /// </summary>
    private static (IReadOnlySet<string> Names, bool ForAllNames) ModelNames(IServiceProvider serviceProvider,
        PredictionEnginePoolRegistry<TData, TPrediction> registry)
    {
        var names = new HashSet<string>(registry.ModelNames, StringComparer.Ordinal);
        bool forAllNames = false;
        // The options framework keeps a configuration's name only as the public Name property of its classes
        // (ConfigureNamedOptions<TOptions, TDep1, …>, one per number of dependencies): no interface exposes it.
        foreach (var configuration in serviceProvider.GetServices<IConfigureOptions<PredictionEnginePoolOptions<TData, TPrediction>>>()
                     .Concat<object>(serviceProvider.GetServices<IPostConfigureOptions<PredictionEnginePoolOptions<TData, TPrediction>>>()))
        {
            if (configuration.GetType().GetProperty("Name", typeof(string)) is not { } property) continue;
            if (property.GetValue(configuration) is string name) names.Add(name);
            else forAllNames = true;
        }
        return (names, forAllNames);
    }

    private ModelSlot DefaultSlot => _defaultSlot ?? throw new ArgumentException(
        "No default model is configured: call FromFile(path) or FromUri(uri) without a model name, or pass a model name.");

    private PredictionEngine<TData, TPrediction> Rent(ModelSlot slot)
    {
        while (true)
        {
            ObjectDisposedException.ThrowIf(IsDisposed, this);
            var generation = slot.Current;
            var engine = generation.TryRent();
            if (engine is null) continue;   // retired by a concurrent reload: take the new generation
            var lease = _leases.TryGetValue(engine, out var found) ? found
                : throw new InvalidOperationException("Internal error: pooled engine has no lease.");
            Volatile.Write(ref lease.Rented, 1);
            return engine;
        }
    }

    private EngineLease<TData, TPrediction> LeaseOf(PredictionEngine<TData, TPrediction> engine)
    {
        ArgumentNullException.ThrowIfNull(engine);
        return _leases.TryGetValue(engine, out var lease) ? lease
            : throw new ArgumentException("This PredictionEngine was not rented from this pool.", nameof(engine));
    }

    private EngineLease<TData, TPrediction> RentedLease(PredictionEngine<TData, TPrediction> engine)
    {
        var lease = LeaseOf(engine);
        if (Volatile.Read(ref lease.Rented) != 1)
            throw new InvalidOperationException("This PredictionEngine is not rented (it was returned to the pool): its model may be disposed.");
        return lease;
    }

    private void Return(string? modelName, PredictionEngine<TData, TPrediction> engine)
    {
        var lease = LeaseOf(engine);
        if (modelName is not null && !string.Equals(modelName, lease.Generation.ModelName, StringComparison.Ordinal))
            throw new ArgumentException(
                $"This PredictionEngine belongs to model '{lease.Generation.ModelName}', not to model '{modelName}'.", nameof(modelName));
        if (Interlocked.Exchange(ref lease.Rented, 0) != 1)
            throw new InvalidOperationException("This PredictionEngine was already returned to the pool.");
        lease.Generation.Return(engine);
    }

    private ModelSlot GetSlot(string modelName)
    {
        ArgumentNullException.ThrowIfNull(modelName);
        return TryGetOrCreateSlot(modelName) ?? throw new ArgumentException(
            $"No model named '{modelName}' is configured: call FromFile(\"{modelName}\", path) or FromUri(\"{modelName}\", uri) on the pool builder.",
            nameof(modelName));
    }

    private ModelSlot? TryGetOrCreateSlot(string modelName)
    {
        if (_slots.TryGetValue(modelName, out var slot)) return slot;
        ObjectDisposedException.ThrowIf(IsDisposed, this);   // before the lock: another model's first load may hold it
        // Creation starts a loader (a file watcher or a poller): under a lock, so one per model, and nothing is
        // cached when loading fails (the next call tries again). A configured model (the builder's or a custom loader's)
        // has a lock of its own, so a first load that hangs (a model server that does not answer: up to the HTTP timeout)
        // does not hold up the first use of the other models; other names (unknown ones) share one.
        var creation = _modelNames.Contains(modelName)
            ? _configuredSlotCreation.GetOrAdd(modelName, _ => new Lock())
            : _slotCreation;
        lock (creation)
        {
            ObjectDisposedException.ThrowIf(IsDisposed, this);
            if (_slots.TryGetValue(modelName, out slot)) return slot;
            var loader = _modelOptions.Create(modelName).ModelLoader;
            if (loader is null) return null;
            slot = new ModelSlot(this, modelName, loader);
            _slots[modelName] = slot;
            Interlocked.MemoryBarrier();   // the add before the read: Dispose sets the flag, then enumerates
            if (IsDisposed)
            {
                slot.Dispose();   // disposed while this model loaded: Dispose may not have seen it
                throw new ObjectDisposedException(GetType().FullName);
            }
            return slot;
        }
    }

    /// <summary>One model name: its loader, its current generation, and the reload subscription.</summary>
    private sealed class ModelSlot : IDisposable
    {
        private readonly PredictionEnginePool<TData, TPrediction> _pool;
        private readonly ModelLoader _loader;
        private readonly Lock _reload = new();
        private readonly IDisposable _subscription;
        private ModelGeneration<TData, TPrediction> _current;
        private string? _reloadError;
        private bool _disposed;

        public ModelSlot(PredictionEnginePool<TData, TPrediction> pool, string name, ModelLoader loader)
        {
            _pool = pool;
            Name = name;
            _loader = loader;
            bool missedReload;
            lock (_reload)
            {
                // The token is taken before the model: a watching loader can load a newer model and fire while the first
                // generation is being created (its first engine can take seconds for a big model); subscribing only
                // afterwards would get the loader's next token and lose that reload until the model changed again.
                var firstToken = loader.GetReloadToken();
                try
                {
                    var model = loader.GetModel();
                    try
                    {
                        _current = CreateGeneration(model, 1);
                    }
                    // ML.NET refuses a model whose input columns TData does not give (a 'Label' it reads, a Text of another
                    // type) with an ArgumentException naming its own parameter ('inputSchema'), which reads as the
                    // caller's mistake: the web API sample took it for a bad switch (exit code 2). It is the model that
                    // does not fit, as a reload says.
                    catch (ArgumentException ex)
                    {
                        throw new InvalidOperationException(
                            $"The model does not fit {typeof(TData).Name} -> {typeof(TPrediction).Name}: {ModelZip.Describe(ex)}", ex);
                    }
                }
                catch
                {
                    (loader as IDisposable)?.Dispose();
                    throw;
                }
                _subscription = ChangeToken.OnChange(loader.GetReloadToken, Reload);
                missedReload = firstToken.HasChanged;
            }
            pool._logger.LogInformation("Loaded model '{ModelName}' (generation 1).", name);
            if (missedReload) Reload();
        }

        public string Name { get; }
        public ModelGeneration<TData, TPrediction> Current => Volatile.Read(ref _current);

        /// <summary>The loader's error (file, download), else the pool's own (a model that does not fit), else null.</summary>
        public string? LastLoadError => _loader.LastLoadError ?? Volatile.Read(ref _reloadError);

        private ModelGeneration<TData, TPrediction> CreateGeneration(ITransformer model, long number)
        {
            var generation = new ModelGeneration<TData, TPrediction>(Name, number, model, _pool._mlOptions.MLContext,
                _pool._mlOptions.MaximumRetainedEngines, _pool._leases, _pool._logger);
            if (_pool._mlOptions.ValidateModelOnLoad)
            {
                try
                {
                    // Creating an engine binds TData/TPrediction to the model's schema: a mismatch throws here, not in a request.
                    var engine = generation.TryRent()!;
                    try
                    {
                        RequireOutputColumns(engine.OutputSchema);
                    }
                    finally
                    {
                        generation.Return(engine);
                    }
                }
                catch
                {
                    generation.Retire();   // disposes the rejected model
                    throw;
                }
            }
            return generation;
        }

        /// <summary>
        /// ML.NET binds a <typeparamref name="TPrediction"/> member whose column the model lacks to nothing: it keeps its
        /// default, and every answer would look valid (a label of null, no scores). Such a model does not fit.
        /// </summary>
        private static void RequireOutputColumns(DataViewSchema output)
        {
            foreach (var column in SchemaDefinition.Create(typeof(TPrediction), SchemaDefinition.Direction.Write))
                if (output.GetColumnOrNull(column.ColumnName) is null)
                    throw new InvalidOperationException(
                        $"The model has no output column '{column.ColumnName}' for {typeof(TPrediction).Name}.{column.MemberName}; " +
                        $"its columns are {string.Join(", ", output.Where(c => !c.IsHidden).Select(c => c.Name))}.");
        }

        private void Reload()
        {
            ModelGeneration<TData, TPrediction> old;
            lock (_reload)
            {
                if (_disposed) return;
                ITransformer model;
                try
                {
                    model = _loader.GetModel();
                }
                catch (Exception ex)
                {
                    Refused(ModelZip.Describe(ex), ex);
                    return;
                }
                if (ReferenceEquals(model, _current.Model)) return;
                ModelGeneration<TData, TPrediction> next;
                try
                {
                    next = CreateGeneration(model, _current.Number + 1);
                }
                catch (Exception ex)
                {
                    Refused($"the new model does not fit {typeof(TData).Name} -> {typeof(TPrediction).Name}: {ModelZip.Describe(ex)}", ex);
                    return;
                }
                old = _current;
                Volatile.Write(ref _current, next);
                Volatile.Write(ref _reloadError, null);
                _pool._logger.LogInformation("Reloaded model '{ModelName}': generation {Generation} is serving.", Name, next.Number);
            }
            old.Retire();
        }

        /// <summary>
        /// Keeps <paramref name="reason"/> for the health check and logs it as one line, as the file loader logs a damaged
        /// file: the exception (ML.NET's reflection layers, many lines) goes to Debug only.
        /// </summary>
        private void Refused(string reason, Exception ex)
        {
            Volatile.Write(ref _reloadError, reason);
            _pool._logger.LogError("Model '{ModelName}': {Reason}; generation {Generation} keeps serving.", Name, reason, _current.Number);
            _pool._logger.LogDebug(ex, "Model '{ModelName}': reload failure details.", Name);
        }

        public void Dispose()
        {
            lock (_reload)
            {
                if (_disposed) return;
                _disposed = true;
            }
            _subscription.Dispose();
            (_loader as IDisposable)?.Dispose();
            _current.Retire();
        }
    }
}
