using Microsoft.ML;
using Microsoft.ML.Runtime;
using RetriKT.MLNet.Text;

namespace RetriKT.MLNet;

/// <summary>Entry point to RetriKT's estimators: <c>mlContext.RetriKT()</c>.</summary>
public sealed class RetriKTCatalog
{
    internal RetriKTCatalog(IHostEnvironment environment) => Environment = environment;

    internal IHostEnvironment Environment { get; }

    /// <summary>
    /// Tokenizes <paramref name="inputColumnName"/> (and <paramref name="secondInputColumnName"/> for sentence pairs)
    /// into WordPiece ids in <paramref name="outputColumnName"/>; the vocabulary is built from the training texts or
    /// loaded from <paramref name="vocabularyPath"/>.
    /// </summary>
    public TextTokenizingEstimator TextTokenizer(string outputColumnName = "TokenIds", string inputColumnName = "Text",
        string? secondInputColumnName = null, int maxLength = 128, string? vocabularyPath = null)
        => new(Environment, new TextTokenizingEstimator.Options
        {
            OutputColumnName = outputColumnName,
            InputColumnName = inputColumnName,
            SecondInputColumnName = secondInputColumnName,
            MaxLength = maxLength,
            VocabularyPath = vocabularyPath,
        });

    /// <summary>Tokenizer with all options.</summary>
    public TextTokenizingEstimator TextTokenizer(TextTokenizingEstimator.Options options) => new(Environment, options);
}

/// <summary>Catalog extension methods on <see cref="MLContext"/>.</summary>
public static class MLContextExtensions
{
    /// <summary>RetriKT's estimators for this context.</summary>
    public static RetriKTCatalog RetriKT(this MLContext mlContext)
    {
        ArgumentNullException.ThrowIfNull(mlContext);
        return new RetriKTCatalog(mlContext);
    }
}
