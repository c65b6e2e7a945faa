using Microsoft.ML;
using Microsoft.ML.Runtime;
using RetriKT.MLNet.Encoders;
using RetriKT.MLNet.Knowledge;
using RetriKT.MLNet.Text;
using RetrieverDefaults = RetriKT.MLNet.Knowledge.KnowledgeRetrieverEstimator.Options.Defaults;
using TokenizerDefaults = RetriKT.MLNet.Text.TextTokenizingEstimator.Options.Defaults;

namespace RetriKT.MLNet;

/// <summary>
/// Entry point to RetriKT's estimators: <c>mlContext.RetriKT()</c>. The runtime's (tokenizer, retriever) are members;
/// the training assembly adds its trainers (soft prompts + PPO, knowledge extraction) as extension methods
/// (<c>RetriKTTrainingCatalog</c>). Like every RetriKT catalog extension they live in namespace <c>Microsoft.ML</c>,
/// so <c>using Microsoft.ML;</c> reaches them.
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
    /// <param name="outputColumnName">Output column of token ids (a variable-size vector of at most <paramref name="maxLength"/>).</param>
    /// <param name="inputColumnName">Text column to tokenize.</param>
    /// <param name="secondInputColumnName">Second text column of sentence pairs, or null for single texts.</param>
    /// <param name="maxLength">Tokens kept per row, special tokens included; longer rows are truncated.</param>
    /// <param name="vocabularyPath">A WordPiece <c>vocab.txt</c> to use, or null to build one from the training texts.</param>
    public TextTokenizingEstimator TextTokenizer(string outputColumnName = TokenizerDefaults.OutputColumnName,
        string inputColumnName = TokenizerDefaults.InputColumnName, string? secondInputColumnName = null, int maxLength = TokenizerDefaults.MaxLength,
        string? vocabularyPath = null)
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
    /// Embeds <paramref name="inputColumnName"/> (with <paramref name="secondInputColumnName"/> for sentence pairs) with
    /// a pretrained sentence <paramref name="encoder"/> into <paramref name="outputColumnName"/>, a vector of Single that
    /// carries the encoder's fingerprint: a knowledge retriever reading it refuses a store keyed by another encoder.
    /// The encoder is saved inside model.zip.
    /// </summary>
    /// <param name="encoder">The sentence encoder, e.g. <c>ManagedBertSentenceEncoder.Load(PretrainedEncoderPackage.MiniLM)</c>.</param>
    /// <param name="outputColumnName">Output column of embeddings (a known-size vector of the encoder's dimension).</param>
    /// <param name="inputColumnName">Text column to embed.</param>
    /// <param name="secondInputColumnName">Second text column of sentence pairs, or null for single texts.</param>
    public SentenceEmbeddingEstimator SentenceEmbedding(ManagedBertSentenceEncoder encoder, string outputColumnName = SentenceEmbeddingEstimator.Defaults.OutputColumnName,
        string inputColumnName = SentenceEmbeddingEstimator.Defaults.InputColumnName, string? secondInputColumnName = null)
        => new(Environment, encoder, outputColumnName, inputColumnName, secondInputColumnName);

    /// <summary>
    /// Retrieves, for each row's query embedding in <paramref name="inputColumnName"/>, the <paramref name="k"/> most
    /// similar entries of <paramref name="store"/> (which must have embeddings of the same dimension): columns
    /// NeighborIds, NeighborSimilarities and NeighborSoftLabels. By default (<see cref="RetrieverIndexKind.Auto"/>) exact
    /// search below 12 Mi floats of embeddings and HNSW from there (docs/SEARCH.md); <paramref name="index"/> forces one.
    /// </summary>
    /// <param name="store">The knowledge store to search; its entries must carry embeddings.</param>
    /// <param name="inputColumnName">Column of query embeddings (a float vector of the store's dimension).</param>
    /// <param name="k">Neighbours returned per row.</param>
    /// <param name="index">Which index to build over the store's embeddings.</param>
    public KnowledgeRetrieverEstimator KnowledgeRetriever(KnowledgeStore store, string inputColumnName = RetrieverDefaults.InputColumnName,
        int k = RetrieverDefaults.K, RetrieverIndexKind index = RetrieverDefaults.Index)
        => new(Environment, store, new KnowledgeRetrieverEstimator.Options { InputColumnName = inputColumnName, K = k, Index = index });

    /// <summary>Knowledge retriever with all options.</summary>
    public KnowledgeRetrieverEstimator KnowledgeRetriever(KnowledgeStore store, KnowledgeRetrieverEstimator.Options options)
        => new(Environment, store, options);
}
