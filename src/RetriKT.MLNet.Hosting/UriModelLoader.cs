using System.Net;
using System.Net.Http.Headers;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Primitives;
using Microsoft.ML;
using RetriKT.MLNet.Common;

namespace RetriKT.MLNet.Hosting;

/// <summary>
/// Downloads a model.zip and polls it with conditional GETs (If-None-Match with the last ETag, else
/// If-Modified-Since). 304 means unchanged; a 200 whose content differs is loaded and swapped in. Failures are logged
/// and the current model keeps serving.
/// </summary>
internal sealed class UriModelLoader : ModelLoader, IDisposable
{
    private readonly MLContext _mlContext;
    private readonly ILogger _logger;
    private readonly HttpClient _http;
    private readonly CancellationTokenSource _stop = new();
    private readonly Lock _reloadLock = new();
    private ModelReloadToken _reloadToken = new();
    private string? _lastLoadError;
    private ITransformer? _model;
    private byte[] _modelHash = [];
    private EntityTagHeaderValue? _etag;
    private DateTimeOffset? _lastModified;
    /// <summary>Whether <see cref="_etag"/>/<see cref="_lastModified"/> describe the serving model (not a broken version).</summary>
    private bool _validatorsAreServing;
    private Uri _uri = null!;
    private Task _polling = Task.CompletedTask;
    private int _disposed;

    public UriModelLoader(MLContext mlContext, ILogger logger, Func<HttpMessageHandler>? handlerFactory)
    {
        _mlContext = mlContext;
        _logger = logger;
        _http = handlerFactory is null ? new HttpClient() : new HttpClient(handlerFactory(), disposeHandler: true);
        _http.Timeout = TimeSpan.FromMinutes(5);
    }

    /// <summary>Downloads and loads the model now (throws on failure), then polls every <paramref name="period"/>.</summary>
    public void Start(Uri uri, TimeSpan period)
    {
        _uri = uri;
        var loaded = PollAsync(_stop.Token).GetAwaiter().GetResult();
        if (!loaded || _model is null)
            throw new InvalidOperationException($"Model '{uri}' could not be downloaded.");
        _polling = Task.Run(() => PollLoopAsync(period, _stop.Token));
    }

    public override ITransformer GetModel() =>
        Volatile.Read(ref _model) ?? throw new InvalidOperationException("The model loader was not started.");

    public override IChangeToken GetReloadToken() => Volatile.Read(ref _reloadToken);

    private async Task PollLoopAsync(TimeSpan period, CancellationToken stop)
    {
        using var timer = new PeriodicTimer(period);
        try
        {
            while (await timer.WaitForNextTickAsync(stop).ConfigureAwait(false))
            {
                try
                {
                    if (await PollAsync(stop).ConfigureAwait(false))
                    {
                        Volatile.Write(ref _lastLoadError, null);
                        FireReload();
                    }
                }
                catch (OperationCanceledException) when (stop.IsCancellationRequested)
                {
                    return;
                }
                catch (Exception ex)
                {
                    // Until a version loads again (a 304 for the same broken version keeps the error).
                    Volatile.Write(ref _lastLoadError, ModelZip.Describe(ex));
                    _logger.LogError(ex, "Checking model '{Uri}' for a new version failed; the current model keeps serving: {Error}", _uri, ModelZip.Describe(ex));
                }
            }
        }
        catch (OperationCanceledException) when (stop.IsCancellationRequested)
        {
        }
    }

    /// <inheritdoc />
    public override string? LastLoadError => Volatile.Read(ref _lastLoadError);

    /// <summary>One conditional GET; returns true when a new model was loaded (throws on download/load errors).</summary>
    private async Task<bool> PollAsync(CancellationToken cancellationToken)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, _uri);
        if (_etag is not null) request.Headers.IfNoneMatch.Add(_etag);
        else if (_lastModified is not null) request.Headers.IfModifiedSince = _lastModified;
        using var response = await _http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancellationToken).ConfigureAwait(false);
        if (response.StatusCode == HttpStatusCode.NotModified)
        {
            // The serving version is still the published one: a failure since (a network error) no longer stands. A 304
            // for a broken version's validators keeps its error.
            if (_validatorsAreServing) Volatile.Write(ref _lastLoadError, null);
            return false;
        }
        if (!response.IsSuccessStatusCode)
            throw new HttpRequestException($"GET {_uri} answered {(int)response.StatusCode} {response.ReasonPhrase}.", null, response.StatusCode);
        ModelSnapshot snapshot;
        await using (var body = await response.Content.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false))
            snapshot = await ModelSnapshot.CopyAsync(body, cancellationToken).ConfigureAwait(false);
        using var held = snapshot;
        var hash = snapshot.Sha256;
        var etag = response.Headers.ETag;
        var lastModified = response.Content.Headers.LastModified;
        if (hash.AsSpan().SequenceEqual(_modelHash))
        {
            _etag = etag;
            _lastModified = lastModified;
            _validatorsAreServing = true;
            // The same bytes again (a server without validators), or the serving model back after a broken version:
            // either way the serving model is what the server publishes, so an earlier failure no longer stands.
            Volatile.Write(ref _lastLoadError, null);
            return false;
        }
        ITransformer model;
        try
        {
            using var stream = snapshot.Open();
            ModelZip.Verify(stream, name: null);   // ML.NET does not check the zip's CRC: a damaged part would load as another model
            stream.Position = 0;
            model = _mlContext.Model.Load(stream, out _);
        }
        catch (Exception ex)
        {
            // Remember the validators anyway: the same broken version is not downloaded again every period.
            _etag = etag;
            _lastModified = lastModified;
            _validatorsAreServing = false;
            throw new InvalidDataException($"Model '{_uri}' ({snapshot.Length} bytes, ETag {etag}) is not a loadable ML.NET model: {ModelZip.Describe(ex)}", ex);
        }
        lock (_reloadLock)
        {
            Volatile.Write(ref _model, model);
        }
        _modelHash = hash;
        _etag = etag;
        _lastModified = lastModified;
        _validatorsAreServing = true;
        _logger.LogInformation("Downloaded model '{Uri}' ({Bytes} bytes, ETag {ETag}).", _uri, snapshot.Length, etag?.Tag ?? "none");
        if (etag is null && lastModified is null)
            _logger.LogWarning("Model '{Uri}' has neither ETag nor Last-Modified: every poll downloads it whole.", _uri);
        return true;
    }

    private void FireReload()
    {
        lock (_reloadLock)
        {
            if (Volatile.Read(ref _disposed) != 0) return;
            var fired = Interlocked.Exchange(ref _reloadToken, new ModelReloadToken());
            try
            {
                fired.OnReload();
            }
            catch (Exception ex)
            {
                _logger.LogError(ex, "A reload callback for model '{Uri}' failed.", _uri);
            }
        }
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        _stop.Cancel();
        try
        {
            _polling.Wait(TimeSpan.FromSeconds(5));
        }
        catch (AggregateException)
        {
        }
        _http.Dispose();
        _stop.Dispose();
    }
}
