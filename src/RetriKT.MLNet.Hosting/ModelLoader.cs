using Microsoft.Extensions.Primitives;
using Microsoft.ML;

namespace RetriKT.MLNet.Hosting;

/// <summary>
/// Supplies the current model of one pool entry and signals when a newer one is available (same contract as
/// Microsoft.Extensions.ML's ModelLoader, so custom loaders port unchanged).
/// </summary>
/// <remarks>
/// Ownership: once <see cref="GetModel"/> has returned a model, the pool owns it and disposes it when it is replaced
/// and its rented engines are back. Fire the reload token synchronously after the new model is visible through
/// <see cref="GetModel"/>, and never fire two reloads concurrently. A loader that implements <see cref="IDisposable"/>
/// is disposed with the pool.
/// </remarks>
public abstract class ModelLoader
{
    /// <summary>A token that fires once, when <see cref="GetModel"/> starts returning a newer model.</summary>
    public abstract IChangeToken GetReloadToken();

    /// <summary>The current model.</summary>
    public abstract ITransformer GetModel();

    /// <summary>
    /// Why the newest version could not be loaded (a damaged or deleted file, a failed download) while
    /// <see cref="GetModel"/> keeps returning the previous model; null once a version loads again. The pool's health
    /// reports it (<see cref="PredictionEnginePool{TData, TPrediction}.GetLastLoadError"/>). Default: null.
    /// </summary>
    public virtual string? LastLoadError => null;
}

/// <summary>A one-shot change token a <see cref="ModelLoader"/> fires after a reload.</summary>
public class ModelReloadToken : IChangeToken
{
    private readonly CancellationTokenSource _cts = new();

    /// <inheritdoc />
    public bool ActiveChangeCallbacks => true;

    /// <inheritdoc />
    public bool HasChanged => _cts.IsCancellationRequested;

    /// <inheritdoc />
    public IDisposable RegisterChangeCallback(Action<object?> callback, object? state) => _cts.Token.Register(callback, state);

    /// <summary>Fires the token: runs every registered callback on the calling thread.</summary>
    public void OnReload() => _cts.Cancel();
}
