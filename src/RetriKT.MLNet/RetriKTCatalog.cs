using Microsoft.ML;
using Microsoft.ML.Runtime;
using RetriKT.MLNet.Knowledge;
using RetriKT.MLNet.Text;

namespace RetriKT.MLNet;

/// <summary>
/// Entry point to RetriKT's estimators: <c>mlContext.RetriKT()</c>. The runtime's (tokenizer, retriever) are members;
/// the training assembly adds its trainers (soft prompts + PPO, knowledge extraction) as extension methods
/// (<c>RetriKTTrainingCatalog</c>), reached with the same <c>using RetriKT.MLNet;</c>.
/// </summary>
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

    /// <summary>
    /// Retrieves, for each row's query embedding in <paramref name="inputColumnName"/>, the <paramref name="k"/> most
    /// similar entries of <paramref name="store"/> (which must have embeddings of the same dimension): columns
    /// NeighborIds, NeighborSimilarities and NeighborSoftLabels. Exact search unless <paramref name="index"/> says HNSW.
    /// </summary>
    public KnowledgeRetrieverEstimator KnowledgeRetriever(KnowledgeStore store, string inputColumnName = "Features", int k = 8,
        RetrieverIndexKind index = RetrieverIndexKind.Exact)
        => new(Environment, store, new KnowledgeRetrieverEstimator.Options { InputColumnName = inputColumnName, K = k, Index = index });

    /// <summary>Knowledge retriever with all options.</summary>
    public KnowledgeRetrieverEstimator KnowledgeRetriever(KnowledgeStore store, KnowledgeRetrieverEstimator.Options options)
        => new(Environment, store, options);
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
