namespace RetriKT.MLNet.Hosting;

/// <summary>
/// Named options of one model of a pool (name = model name, <c>""</c> = the default model). <c>FromFile</c>/<c>FromUri</c>
/// fill them; set <see cref="ModelLoader"/> yourself to plug a custom loader.
/// </summary>
/// <typeparam name="TData">The input type of the engines.</typeparam>
/// <typeparam name="TPrediction">The output type of the engines.</typeparam>
public class PredictionEnginePoolOptions<TData, TPrediction>
    where TData : class
    where TPrediction : class, new()
{
    /// <summary>The loader of this model; null when no model of this name is configured.</summary>
    public ModelLoader? ModelLoader { get; set; }
}

/// <summary>The model names configured for one pool type (what <c>WarmUp</c> loads).</summary>
internal sealed class PredictionEnginePoolRegistry<TData, TPrediction>
    where TData : class
    where TPrediction : class, new()
{
    public HashSet<string> ModelNames { get; } = new(StringComparer.Ordinal);
}
