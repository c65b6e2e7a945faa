using System.Runtime.CompilerServices;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.ObjectPool;
using Microsoft.ML;

namespace RetriKT.MLNet.Hosting;

/// <summary>
/// One loaded model of a pool entry plus the engines created from it. A reload retires the current generation; the
/// model is disposed exactly once, when it is retired and the last engine rented from it has come back. Engines
/// never cross generations: each one returns to the pool it was created by.
/// </summary>
internal sealed class ModelGeneration<TData, TPrediction>
    where TData : class
    where TPrediction : class, new()
{
    // Rented-engine count in the low bits, "retired" in bit 62: one word, so "rent unless retired" and
    // "retire, and release if nothing is rented" are single atomic steps and the release happens exactly once.
    private const long RetiredFlag = 1L << 62;
    private const long CountMask = RetiredFlag - 1;
    private long _state;

    private readonly ObjectPool<PredictionEngine<TData, TPrediction>> _engines;
    private readonly ILogger _logger;

    public ModelGeneration(string modelName, long number, ITransformer model, MLContext mlContext, int maximumRetained,
        ConditionalWeakTable<PredictionEngine<TData, TPrediction>, EngineLease<TData, TPrediction>> leases, ILogger logger)
    {
        ModelName = modelName;
        Number = number;
        Model = model;
        LoadedAt = DateTimeOffset.UtcNow;
        _logger = logger;
        var provider = new DefaultObjectPoolProvider { MaximumRetained = Math.Max(1, maximumRetained) };
        // PredictionEngine is IDisposable, so this is a pool that disposes engines it drops and those it holds at Dispose.
        _engines = provider.Create(new EnginePolicy(this, mlContext, leases));
    }

    public string ModelName { get; }
    public long Number { get; }
    public ITransformer Model { get; }
    public DateTimeOffset LoadedAt { get; }
    public bool IsRetired => (Volatile.Read(ref _state) & RetiredFlag) != 0;
    public bool IsReleased { get; private set; }

    /// <summary>Rents an engine, or returns null when this generation was retired meanwhile (caller re-reads the current one).</summary>
    public PredictionEngine<TData, TPrediction>? TryRent()
    {
        var state = Volatile.Read(ref _state);
        while (true)
        {
            if ((state & RetiredFlag) != 0) return null;
            var seen = Interlocked.CompareExchange(ref _state, state + 1, state);
            if (seen == state) break;
            state = seen;
        }
        try
        {
            return _engines.Get();
        }
        catch
        {
            EndRent();
            throw;
        }
    }

    /// <summary>Takes back an engine rented from this generation (after a retire it is dropped, not pooled).</summary>
    public void Return(PredictionEngine<TData, TPrediction> engine)
    {
        if (IsRetired) engine.Dispose();
        else _engines.Return(engine);
        EndRent();
    }

    /// <summary>Stops renting; the model is released now if nothing is rented, else when the last engine returns.</summary>
    public void Retire()
    {
        var before = Interlocked.Or(ref _state, RetiredFlag);
        if ((before & RetiredFlag) == 0 && (before & CountMask) == 0) Release();
    }

    private void EndRent()
    {
        if (Interlocked.Decrement(ref _state) == RetiredFlag) Release();
    }

    private void Release()
    {
        // Every rent has ended (count 0 after the retire), so no thread is inside the object pool any more.
        IsReleased = true;
        (_engines as IDisposable)?.Dispose();
        ModelDisposal.Dispose(Model, _logger, ModelName, Number);
    }

    /// <summary>Creates engines that do not own the shared model, each tagged with its generation.</summary>
    private sealed class EnginePolicy(ModelGeneration<TData, TPrediction> generation, MLContext mlContext,
        ConditionalWeakTable<PredictionEngine<TData, TPrediction>, EngineLease<TData, TPrediction>> leases)
        : PooledObjectPolicy<PredictionEngine<TData, TPrediction>>
    {
        public override PredictionEngine<TData, TPrediction> Create()
        {
            var engine = mlContext.Model.CreatePredictionEngine<TData, TPrediction>(generation.Model,
                new PredictionEngineOptions { OwnsTransformer = false });
            leases.Add(engine, new EngineLease<TData, TPrediction>(generation));
            return engine;
        }

        public override bool Return(PredictionEngine<TData, TPrediction> obj) => true;
    }
}

/// <summary>Which generation an engine belongs to, and whether it is rented (detects double and foreign returns).</summary>
internal sealed class EngineLease<TData, TPrediction>(ModelGeneration<TData, TPrediction> generation)
    where TData : class
    where TPrediction : class, new()
{
    public ModelGeneration<TData, TPrediction> Generation { get; } = generation;
    public int Rented;
}

/// <summary>Disposes a retired model: the model itself when it is IDisposable (a TransformerChain disposes its parts),
/// otherwise each IDisposable part of a chain, recursively.</summary>
internal static class ModelDisposal
{
    public static void Dispose(ITransformer model, ILogger logger, string modelName, long generation)
    {
        try
        {
            DisposeTree(model);
            logger.LogDebug("Disposed model '{ModelName}' generation {Generation}.", modelName, generation);
        }
        catch (Exception ex)
        {
            logger.LogError(ex, "Disposing model '{ModelName}' generation {Generation} failed.", modelName, generation);
        }
    }

    private static void DisposeTree(ITransformer model)
    {
        if (model is IDisposable disposable) disposable.Dispose();
        else if (model is IEnumerable<ITransformer> parts)
            foreach (var part in parts) DisposeTree(part);
    }
}
