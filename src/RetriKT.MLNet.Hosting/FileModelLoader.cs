using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Primitives;
using Microsoft.ML;
using RetriKT.MLNet.Common;

namespace RetriKT.MLNet.Hosting;

/// <summary>
/// Loads a model.zip from disk and, when watching, reloads it after the file was replaced: by a copy over it
/// (Changed events), an atomic rename onto it (Renamed), or a move in from elsewhere (Created). Events are debounced
/// into one reload; a file whose bytes did not change is not reloaded; a file that does not load, or is deleted, is
/// logged (one line, no binary) and reported as <see cref="LastLoadError"/> while the previous model keeps serving.
/// Every <see cref="StampCheckPeriod"/> the file's size and time are compared with those of the last read, for the
/// replacements no file event reports: a symlinked folder swapped above the file (<c>ln -sfn releases/v2 current</c>,
/// Kubernetes' volume updates), a file changed by another host on a network share.
/// </summary>
internal sealed class FileModelLoader : ModelLoader, IDisposable
{
    private const int OpenAttempts = 20;
    private static readonly TimeSpan OpenRetryDelay = TimeSpan.FromMilliseconds(50);
    private static readonly TimeSpan StampCheckPeriod = TimeSpan.FromSeconds(2);

    private readonly MLContext _mlContext;
    private readonly ILogger _logger;
    private readonly TimeSpan _debounce;
    private readonly Lock _reloadLock = new();
    private ModelReloadToken _reloadToken = new();
    private FileSystemWatcher? _watcher;
    private Timer? _debounceTimer;
    private Timer? _stampCheckTimer;
    private (DateTime WriteTimeUtc, long Length)? _readStamp;   // the file's, taken just before its last read
    private ITransformer? _model;
    private byte[] _modelHash = [];
    private string _filePath = "";
    private string? _lastLoadError;
    private bool _disposed;

    public FileModelLoader(MLContext mlContext, ILogger logger, TimeSpan debounce)
    {
        _mlContext = mlContext;
        _logger = logger;
        _debounce = debounce < TimeSpan.Zero ? TimeSpan.Zero : debounce;
    }

    /// <summary>Loads the file now (throws when it is missing or not a model) and starts watching it if asked.</summary>
    public void Start(string filePath, bool watchFile)
    {
        _filePath = Path.GetFullPath(filePath);
        if (!File.Exists(_filePath))
            throw new FileNotFoundException(Directory.Exists(_filePath)
                ? $"Model file '{_filePath}' is a folder; expected a model.zip file." // "does not exist" sent users looking for a file that is there
                : $"Model file '{_filePath}' does not exist.", _filePath);
        long length;
        lock (_reloadLock)
        {
            // Watching starts before the read: a file replaced while the first model loads (seconds for a big one)
            // is reloaded once this load is done (the reload waits for the lock) instead of being missed.
            if (watchFile) StartWatching();
            _readStamp = Stamp();
            using var snapshot = ReadModelFile();
            _model = LoadModel(snapshot);
            _modelHash = snapshot.Sha256;
            length = snapshot.Length;
        }
        _logger.LogInformation("Loaded model file '{Path}' ({Bytes} bytes).", _filePath, length);
    }

    private void StartWatching()
    {
        _debounceTimer = new Timer(_ => ReloadIfChanged(), null, Timeout.Infinite, Timeout.Infinite);
        var directory = Path.GetDirectoryName(_filePath)!;
        _watcher = new FileSystemWatcher(directory, Path.GetFileName(_filePath))
        {
            NotifyFilter = NotifyFilters.FileName | NotifyFilters.LastWrite | NotifyFilters.Size | NotifyFilters.CreationTime,
            IncludeSubdirectories = false,
        };
        _watcher.Changed += OnFileEvent;
        _watcher.Created += OnFileEvent;
        _watcher.Renamed += OnFileEvent;
        _watcher.Deleted += OnFileDeleted;
        _watcher.Error += (_, e) => _logger.LogError(e.GetException(), "Watching model file '{Path}' failed; reloads may be missed.", _filePath);
        _watcher.EnableRaisingEvents = true;
        _stampCheckTimer = new Timer(_ => CheckStamp(), null, StampCheckPeriod, StampCheckPeriod);
    }

    /// <summary>The size and last write time of the file the path leads to now (through any links); null when there is none.</summary>
    private (DateTime WriteTimeUtc, long Length)? Stamp()
    {
        var file = new FileInfo(_filePath);
        return file.Exists ? (file.LastWriteTimeUtc, file.Length) : null;
    }

    /// <summary>A file that differs from the one last read, though no event said so: reload it as after an event.</summary>
    private void CheckStamp()
    {
        lock (_reloadLock)
        {
            var stamp = Stamp();
            if (_disposed || stamp == _readStamp) return;
            _readStamp = stamp;   // once per change: a file that does not load is not read again every period
        }
        _logger.LogDebug("Model file '{Path}': its size or time changed without a file event.", _filePath);
        RestartQuietPeriod();
    }

    /// <summary>(Re)starts the debounce: the reload runs once no change has come for the quiet period.</summary>
    private void RestartQuietPeriod()
    {
        try
        {
            _debounceTimer?.Change(_debounce, Timeout.InfiniteTimeSpan);
        }
        catch (ObjectDisposedException) // disposed meanwhile: no reload is wanted
        {
        }
    }

    public override ITransformer GetModel() =>
        Volatile.Read(ref _model) ?? throw new InvalidOperationException("The model loader was not started.");

    public override IChangeToken GetReloadToken() => Volatile.Read(ref _reloadToken);

    public override string? LastLoadError => Volatile.Read(ref _lastLoadError);

    private void OnFileDeleted(object sender, FileSystemEventArgs e)
    {
        if (!string.Equals(e.FullPath, _filePath, StringComparison.Ordinal)) return;
        Volatile.Write(ref _lastLoadError, $"Model file '{_filePath}' was deleted; the loaded model keeps serving.");
        _logger.LogWarning("Model file '{Path}' was deleted; the loaded model keeps serving.", _filePath);
    }

    private void OnFileEvent(object sender, FileSystemEventArgs e)
    {
        // A rename *away* from the model name also matches the filter: it leaves no file at our path, which the reload
        // reports (health Degraded, as after a deletion); other events count when they leave a file at our path.
        bool renamedAway = e is RenamedEventArgs renamed && string.Equals(renamed.OldFullPath, _filePath, StringComparison.Ordinal);
        if (!renamedAway && !string.Equals(e.FullPath, _filePath, StringComparison.Ordinal)) return;
        _logger.LogDebug("Model file '{Path}': {ChangeType}.", _filePath, e.ChangeType);
        RestartQuietPeriod();
    }

    private void ReloadIfChanged()
    {
        lock (_reloadLock)
        {
            if (_disposed) return;
            try
            {
                _readStamp = Stamp();
                if (!File.Exists(_filePath))
                {
                    Volatile.Write(ref _lastLoadError, $"Model file '{_filePath}' disappeared; the loaded model keeps serving.");
                    _logger.LogWarning("Model file '{Path}' disappeared; the loaded model keeps serving.", _filePath);
                    return;
                }
                using var snapshot = ReadModelFile();
                var hash = snapshot.Sha256;
                if (hash.AsSpan().SequenceEqual(_modelHash))
                {
                    Volatile.Write(ref _lastLoadError, null);   // the serving model's file is back
                    _logger.LogDebug("Model file '{Path}' changed on disk but its content did not; not reloading.", _filePath);
                    return;
                }
                var model = LoadModel(snapshot);
                Volatile.Write(ref _model, model);
                Volatile.Write(ref _lastLoadError, null);
                _modelHash = hash;
                _logger.LogInformation("Reloaded model file '{Path}' ({Bytes} bytes).", _filePath, snapshot.Length);
            }
            catch (Exception ex)
            {
                // One printable line: a damaged file must not put its bytes (or ML.NET's reflection layers) into the log.
                Volatile.Write(ref _lastLoadError, ModelZip.Describe(ex));
                _logger.LogError("Model file '{Path}' could not be loaded; the previous model keeps serving: {Error}", _filePath, ModelZip.Describe(ex));
                _logger.LogDebug(ex, "Model file '{Path}': load failure details.", _filePath);
                return;
            }
            // Inside the lock: the pool picks the new model up before another reload can replace it.
            var fired = Interlocked.Exchange(ref _reloadToken, new ModelReloadToken());
            try
            {
                fired.OnReload();
            }
            catch (Exception ex)
            {
                _logger.LogError(ex, "A reload callback for model file '{Path}' failed.", _filePath);
            }
        }
    }

    private ModelSnapshot ReadModelFile()
    {
        // Reading the whole file first gives a consistent snapshot: a later rename onto the path cannot mix two models.
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                using var file = new FileStream(_filePath, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
                return ModelSnapshot.CopyAsync(file, CancellationToken.None).GetAwaiter().GetResult();
            }
            catch (IOException) when (attempt < OpenAttempts && File.Exists(_filePath))
            {
                Thread.Sleep(OpenRetryDelay);   // locked by a writer (Windows); try again shortly
            }
        }
    }

    private ITransformer LoadModel(ModelSnapshot snapshot)
    {
        try
        {
            using var stream = snapshot.Open();
            ModelZip.Verify(stream, name: null);   // ML.NET does not check the zip's CRC: a damaged part would load as another model
            stream.Position = 0;
            return _mlContext.Model.Load(stream, out _);
        }
        catch (Exception ex)
        {
            throw new InvalidDataException($"Model file '{_filePath}' ({snapshot.Length} bytes) is not a loadable ML.NET model: {ModelZip.Describe(ex)}", ex);
        }
    }

    public void Dispose()
    {
        lock (_reloadLock)
        {
            if (_disposed) return;
            _disposed = true;
        }
        _watcher?.Dispose();
        _stampCheckTimer?.Dispose();
        _debounceTimer?.Dispose();
    }
}
