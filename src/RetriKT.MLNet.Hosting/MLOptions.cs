using Microsoft.ML;

namespace RetriKT.MLNet.Hosting;

/// <summary>
/// Settings shared by every <see cref="PredictionEnginePool{TData, TPrediction}"/> of a service provider
/// (same name and role as in Microsoft.Extensions.ML, plus the reload and pooling knobs the original hard-coded).
/// Configure with <c>services.Configure&lt;MLOptions&gt;(o =&gt; ...)</c>.
/// </summary>
public class MLOptions
{
    /// <summary>The context models are loaded with and engines are created from. Its log is forwarded to
    /// <c>ILogger&lt;MLContext&gt;</c> at Trace level when that level is enabled.</summary>
    public MLContext MLContext { get; set; } = new();

    /// <summary>
    /// How long a watched model file must stay quiet before it is reloaded. A copy over the file raises several
    /// change events and an atomic rename raises one; waiting for quiet turns either into one reload of the whole file.
    /// </summary>
    public TimeSpan ReloadDebounce { get; set; } = TimeSpan.FromMilliseconds(500);

    /// <summary>Idle engines kept per model generation; engines returned beyond this are disposed.</summary>
    public int MaximumRetainedEngines { get; set; } = Environment.ProcessorCount * 2;

    /// <summary>
    /// Creates one engine from every freshly loaded model before it goes live, so a model whose schema does not
    /// fit <c>TData</c>/<c>TPrediction</c> is rejected (and the previous one keeps serving) instead of failing requests.
    /// </summary>
    public bool ValidateModelOnLoad { get; set; } = true;

    /// <summary>Handler used by <c>FromUri</c> loaders (tests, proxies, client certificates); null = a default handler.</summary>
    public Func<HttpMessageHandler>? HttpMessageHandlerFactory { get; set; }
}
