using Microsoft.ML;
using Microsoft.ML.Runtime;
using RetriKT.MLNet.Knowledge.Extraction;
using RetriKT.MLNet.SoftPrompt;
using RetriKT.MLNet.Knowledge;
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

    /// <summary>
    /// RetriKT steps 1–2: tunes per-label soft prompts for the frozen teacher at <paramref name="teacherPath"/> on the
    /// few-shot data (supervised, then PPO with the default fidelity + diversity reward).
    /// </summary>
    /// <param name="teacherPath">Teacher checkpoint: HF directory (LLaMA family or GPT-2) or llama2.c .bin.</param>
    /// <param name="template">The task template, for example <see cref="TaskTemplates.Sst2"/>.</param>
    /// <param name="labelColumnName">Label column (String or key with text values).</param>
    /// <param name="promptTokens">Virtual tokens per label prompt.</param>
    /// <param name="supervisedEpochs">Stage-1 epochs.</param>
    /// <param name="ppoSteps">Stage-2 PPO iterations (0 skips PPO).</param>
    public SoftPromptPpoTrainer SoftPromptPpoTrainer(string teacherPath, TaskTemplate template, string labelColumnName = "Label",
        int promptTokens = 8, int supervisedEpochs = 20, int ppoSteps = 10)
        => new(Environment, new SoftPromptPpoOptions
        {
            TeacherPath = teacherPath,
            Template = template,
            LabelColumnName = labelColumnName,
            PromptTokens = promptTokens,
            SupervisedEpochs = supervisedEpochs,
            PpoSteps = ppoSteps,
        });

    /// <summary>Soft prompt tuning + PPO with all options.</summary>
    public SoftPromptPpoTrainer SoftPromptPpoTrainer(SoftPromptPpoOptions options) => new(Environment, options);

    /// <summary>
    /// RetriKT step 3: generates <paramref name="samplesPerLabel"/> filtered samples per label with the tuned
    /// <paramref name="softPrompts"/>, each with the teacher's soft label; the few-shot examples join with gold labels.
    /// </summary>
    public KnowledgeExtractor KnowledgeExtractor(SoftPromptTransformer softPrompts, int samplesPerLabel = 64, string labelColumnName = "Label")
        => new(Environment, new KnowledgeExtractorOptions { SoftPrompts = softPrompts, SamplesPerLabel = samplesPerLabel, LabelColumnName = labelColumnName });

    /// <summary>Knowledge extraction with all options.</summary>
    public KnowledgeExtractor KnowledgeExtractor(KnowledgeExtractorOptions options) => new(Environment, options);

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
