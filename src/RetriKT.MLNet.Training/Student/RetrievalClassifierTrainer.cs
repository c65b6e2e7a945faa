using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using RetriKT.MLNet.Bridge;
using RetriKT.MLNet.Common;
using RetriKT.MLNet.Knowledge;
using RetriKT.MLNet.Text;
using TorchSharp;
using static TorchSharp.torch;

namespace RetriKT.MLNet.Student;

/// <summary>
/// Trains RetriKT's deployed model: a tiny transformer encoder trained from scratch plus the knowledge store it
/// retrieves from. Prediction = (1 − λ − μ)·p_head + λ·p_knn + μ·p_terms, with λ, μ and the temperatures chosen on
/// validation rows (see docs/RETRIEVAL-CLASSIFIER.md).
/// Created by <c>mlContext.MulticlassClassification.Trainers.RetrievalClassifier(...)</c>.
/// </summary>
/// <remarks>
/// Input: <c>Label</c> (key type, as after <c>MapValueToKey</c>; a String label is also accepted), <c>Text</c>
/// (String) and optionally a second text column for sentence pairs. Rows with a missing label (key 0, empty string)
/// or an empty text are skipped with a warning. Output: <c>PredictedLabel</c> (key with KeyValues), <c>Score</c>
/// (probabilities, with the annotations ML.NET's multiclass evaluator needs) and optionally neighbour columns.
/// The trainer keeps a copy of the options it was built with: editing that object afterwards changes no Fit.
/// </remarks>
public sealed partial class RetrievalClassifierTrainer : IEstimator<RetrievalClassifierTransformer>
{
    /// <summary>Options of the retrieval classifier (public fields with defaults, ML.NET style).</summary>
    public sealed class Options
    {
        /// <summary>Defaults that the catalog's simple overload shares (C# optional parameters need constants).</summary>
        internal static class Defaults
        {
            public const string LabelColumnName = "Label", TextColumnName = "Text";
            public const int Epochs = 40;
            /// <summary>The share of a generated store held out when no <see cref="ValidationSet"/> is given.</summary>
            public const double StoreValidationShare = 0.1;
            /// <summary>The patience of early stopping on held-out store entries.</summary>
            public const int EarlyStoppingPatience = 3;
        }

        /// <summary>Label column: key type (MapValueToKey) or String. Default "Label".</summary>
        public string LabelColumnName = Defaults.LabelColumnName;
        /// <summary>Text column (String). Default "Text".</summary>
        public string TextColumnName = Defaults.TextColumnName;
        /// <summary>Second text column for sentence-pair tasks, or null. Default null.</summary>
        public string? SecondTextColumnName;
        /// <summary>Output score column (probability per label). Default "Score".</summary>
        public string ScoreColumnName = "Score";
        /// <summary>Output predicted-label column (key). Default "PredictedLabel".</summary>
        public string PredictedLabelColumnName = "PredictedLabel";
        /// <summary>
        /// When set, the transformer also outputs this column (the top <see cref="NeighborsToReport"/> store entries as
        /// "[label] text") and "{name}Similarities" (their cosine similarities), explaining each prediction. Default null.
        /// </summary>
        public string? NeighborsColumnName;
        /// <summary>How many neighbours the explanation columns hold. Default 3.</summary>
        public int NeighborsToReport = 3;

        /// <summary>
        /// The knowledge store as data (teacher-generated samples with soft labels, usually plus the few-shot examples):
        /// columns Text, Text2, Label, SoftLabel, Fidelity, Source, as <c>KnowledgeExtractorTransformer.ToDataView</c>
        /// gives them (see <see cref="KnowledgeStoreData.FromDataView"/> for what is required). Its rows are the
        /// training data and the retrieval memory; training rows are added as gold entries, except one whose text a store
        /// entry holds with the same label (the entry keeps the teacher's soft label). A row whose text the store holds with
        /// another label replaces those entries, with a warning: the row's label is ground truth, the store's the teacher's.
        /// Null: a store is built from the training rows (one-hot soft labels). Default null.
        /// </summary>
        public IDataView? StoreData;
        /// <summary>The knowledge store as an object. Obsolete: pass it as data, <see cref="StoreData"/> = <c>store.ToDataView(mlContext)</c>.</summary>
        [Obsolete("Pass the store as data: StoreData = store.ToDataView(mlContext) (or the extractor's ToDataView).")]
        public KnowledgeStore? Store;
        /// <summary>Optional few-shot dev split (same columns) on which the epoch (early stopping) and the mix (λ, μ, τ, τ_terms) are
        /// chosen, by validation log-likelihood or as <see cref="MixSelection"/> says. Without it, a share of the store is held
        /// out for that (<see cref="StoreValidationShare"/>).</summary>
        public IDataView? ValidationSet;
        /// <summary>
        /// Optional Single column of <see cref="ValidationSet"/>: each row's weight in the validation log-likelihood
        /// (finite, ≥ 0). Use it when the validation rows are of unequal worth — the pipeline gives its 32 real
        /// few-shot dev rows as much total weight as the hundreds of held-out generated rows it adds. Null: all 1.
        /// </summary>
        public string? ValidationWeightColumnName;
        /// <summary>
        /// Optional Single column of <see cref="ValidationSet"/>: each row's weight when λ, μ and the temperatures are
        /// tuned, where it should differ from <see cref="ValidationWeightColumnName"/> (which then weighs only the choice of
        /// epoch). The pipeline uses it to choose the mix on the gold few-shot dev rows alone while the epoch is chosen on
        /// the held-out store rows too (<c>RetriKTPipelineOptions.FewShotDevMixShare</c>). Null: the same weights.
        /// </summary>
        public string? MixWeightColumnName;
        /// <summary>
        /// With no <see cref="ValidationSet"/>: the share of the store's generated entries held out (chosen by the seed) as
        /// validation rows, each labelled with the teacher's most probable label; they leave the store. λ, μ and τ are then
        /// tuned on them and <see cref="EarlyStoppingPatience"/> chooses the epoch, without a split of your own (with
        /// neither retrieval nor early stopping nothing reads them, and nothing is held out). Null: 0.1 when a store is
        /// given (<see cref="StoreData"/>) and no <see cref="ValidationSet"/>, else 0; a store with no generated entries
        /// then holds out nothing. 0 turns it off. On SST-2 (five seeds; 2,048 generated samples per label from the
        /// stand-in teacher) these defaults (0.1, a patience of 3, a 48-wide student with a feed-forward of 96 and 1,400
        /// words) gave 71.1 % on average with 108K parameters, against 69.8 % with 616K parameters for the defaults before
        /// them (40 epochs, an untuned mix, 64 wide, 8,000 words), in about a tenth of the time. Set a share or
        /// <see cref="ValidationSet"/>, not both. Default null.
        /// </summary>
        public double? StoreValidationShare;
        /// <summary>Keep store texts inside model.zip (needed for the Neighbors explanation; costs size). Default true.</summary>
        public bool SaveStoreTexts = true;

        /// <summary>
        /// A WordPiece vocab.txt (for example BERT's 30,522 tokens) or null to build a vocabulary from the store and
        /// training texts. A built vocabulary is small (hundreds to a few thousand tokens), which keeps the embedding
        /// matrix — most of a tiny student's parameters — small; a BERT vocabulary adds 30,522 × HiddenSize parameters
        /// but covers unseen words with real sub-words. Default null.
        /// </summary>
        public string? VocabularyPath;
        /// <summary>
        /// A safetensors file whose tensor <c>token_embeddings</c> [V, d] holds one vector per token of
        /// <see cref="VocabularyPath"/> (in its order): the student's token embeddings start from them instead of random
        /// values. <see cref="TeacherTokenVocabulary.Export"/> writes such a pair from a teacher (its tokens as WordPiece
        /// pieces, its input embeddings), so the tiny student starts with the teacher's whole vocabulary and the geometry
        /// of its words; with d above <see cref="HiddenSize"/>, set <see cref="EmbeddingRank"/>. Null: random. Default null.
        /// </summary>
        public string? TokenEmbeddingsPath;
        /// <summary>
        /// 0: one <see cref="HiddenSize"/>-wide vector per token. r &gt; 0: token embeddings factored as [V, r] × [r, H], so
        /// a vocabulary of thousands of tokens stays tiny (V·r parameters); with <see cref="TokenEmbeddingsPath"/> the
        /// factors start from the given vectors' best rank-r approximation; r is at most <see cref="HiddenSize"/>. Default 0.
        /// </summary>
        public int EmbeddingRank;
        /// <summary>Lower-case and strip accents before tokenizing. Default true.</summary>
        public bool LowerCase = true;
        /// <summary>
        /// Largest vocabulary built from data: the most frequent words are kept, the rest read as [UNK]. The embedding
        /// matrix (vocabulary × <see cref="HiddenSize"/>) is most of a tiny student's parameters, so this bounds its size.
        /// Default 1400.
        /// </summary>
        public int MaxVocabularySize = 1400;
        /// <summary>Minimum count for a whole word to enter a built vocabulary (1 suits few-shot data). Default 1.</summary>
        public int MinWordFrequency = 1;
        /// <summary>
        /// Add every character (as "c" and "##c") to a built vocabulary, so unseen words are spelled out instead of
        /// becoming [UNK]. Off by default: a from-scratch student never trains those pieces on few-shot data, and
        /// untrained pieces shift every sentence with unseen words the same way; [UNK] is trained to be neutral by
        /// <see cref="TokenDropout"/>. Turn on with a large store of generated text. Default false.
        /// </summary>
        public bool CharacterPieces;

        /// <summary>
        /// A pretrained BERT-family encoder to build the student on instead of the tiny from-scratch encoder: a
        /// SentenceTransformers.* package DLL (<c>PretrainedEncoderPackage.MiniLM.Locate()</c>, all-MiniLM-L6-v2) or a
        /// Hugging Face BERT directory (config.json, model.safetensors or pytorch_model.bin, vocab.txt). The encoder is
        /// frozen: each distinct text is embedded once, and training fits a projection of that embedding (the
        /// retrieval key), the head and τ. Its vocabulary replaces the built one; the tiny encoder's shape options
        /// (<see cref="HiddenSize"/>, <see cref="Layers"/>, <see cref="Heads"/>, <see cref="FeedForwardSize"/>,
        /// <see cref="Pooling"/>, <see cref="TokenDropout"/>, the vocabulary options) do not apply. The encoder's
        /// weights (about 90 MB for MiniLM) are saved inside model.zip and counted in the parameter count (22.7M):
        /// an option for teams whose teacher is a real LLM, far above the tiny student's 1–2 % of a small teacher.
        /// See docs/ENCODERS.md. Default null (the tiny student).
        /// </summary>
        public string? Backbone;
        /// <summary>
        /// How many of the <see cref="Backbone"/>'s top layers to fine-tune (0: frozen). The layers below run once per
        /// text (their output is cached); the trainable ones run on every step, so each costs about an encoder pass
        /// over the store per epoch. The tuned weights replace the checkpoint's in model.zip. Default 0.
        /// </summary>
        public int TrainableBackboneLayers;
        /// <summary>AdamW learning rate of the trainable backbone layers (same schedule as <see cref="LearningRate"/>). Default 2e-5.</summary>
        public double BackboneLearningRate = 2e-5;

        /// <summary>Hidden size (= embedding dimension). Default 48.</summary>
        public int HiddenSize = 48;
        /// <summary>Transformer layers. Default 2.</summary>
        public int Layers = 2;
        /// <summary>Attention heads (must divide HiddenSize). Default 4.</summary>
        public int Heads = 4;
        /// <summary>Feed-forward size; 0 = 2 × <see cref="HiddenSize"/>. Default 0.</summary>
        public int FeedForwardSize;
        /// <summary>Maximum tokens per row including [CLS]/[SEP] (at least 3; 5 for sentence pairs); longer texts are truncated (logged). Default 64.</summary>
        public int MaxLength = 64;
        /// <summary>Sentence embedding: mean of token states or the [CLS] state. Default Mean.</summary>
        public StudentPooling Pooling = StudentPooling.Mean;
        /// <summary>Dropout while training. Default 0.1.</summary>
        public double Dropout = 0.1;

        /// <summary>Word dropout while training: probability that a token is replaced by [UNK]. Default 0.2.</summary>
        public double TokenDropout = 0.2;

        /// <summary>Passes over the store. Default 40.</summary>
        public int Epochs = Defaults.Epochs;
        /// <summary>
        /// Choose the epoch on <see cref="ValidationSet"/> (required when above 0): after each epoch the student's
        /// weighted validation NLL is measured — of the head alone without retrieval, of the best mix of head, retrieval
        /// and term matching (as λ, μ and τ are tuned at the end) with it — the weights of the lowest-NLL epoch are kept,
        /// and training stops after this many epochs without a lower one. A store of generated text is learned past the
        /// point where the student generalises (on SST-2, 15 epochs beat 30 on test by 0.7 with retrieval and 1.9 without);
        /// held-out generated rows see that without the test split. 0: train all <see cref="Epochs"/> and keep the last.
        /// The tiny student only (not with a <see cref="Backbone"/>). Null: 3 when store entries are held out for
        /// validation (<see cref="StoreValidationShare"/>, set or by default) and there is no Backbone, else 0 (a
        /// <see cref="ValidationSet"/> of your own keeps the last epoch unless a patience is set). Default null.
        /// </summary>
        public int? EarlyStoppingPatience;
        /// <summary>
        /// The least wait of <see cref="EarlyStoppingPatience"/> in optimizer steps: training stops after that many epochs
        /// without a lower validation NLL, or more epochs when they hold fewer steps than this. On a small store an epoch is
        /// a few steps and the NLL can stay flat for tens of them before it falls (the Quickstart's 147-entry store: flat
        /// for 8 epochs of 10 steps, then halved by epoch 15; stopping at epoch 8 cost 6–8 points on its test split).
        /// Default 100.
        /// </summary>
        public int EarlyStoppingMinPatienceSteps = 100;
        /// <summary>
        /// Score each epoch of <see cref="EarlyStoppingPatience"/> by the head alone, as a student without retrieval is
        /// scored, instead of by the best mix with retrieval; λ, μ and τ are then tuned once, after training. With
        /// <see cref="RetrievalLossWeight"/> = 0 the encoder and head are exactly those of the same student trained with
        /// <see cref="UseRetrieval"/> = false, and retrieval is added to that model. Default false.
        /// </summary>
        public bool SelectEpochOnHead;
        /// <summary>Minibatch size. Default 16.</summary>
        public int BatchSize = 16;
        /// <summary>AdamW learning rate (decays linearly to 10%). Default 2e-3.</summary>
        public double LearningRate = 2e-3;
        /// <summary>AdamW weight decay. Default 0.01.</summary>
        public double WeightDecay = 0.01;
        /// <summary>Weight α of the retrieval loss KL(t ‖ p_knn). 0 trains the head alone. Default 1.</summary>
        public double RetrievalLossWeight = 1.0;
        /// <summary>Weight β of the optional contrastive (two dropout views, InfoNCE) term. Default 0 (off).</summary>
        public double ContrastiveLossWeight;
        /// <summary>Temperature of the contrastive term. Default 0.05.</summary>
        public double ContrastiveTemperature = 0.05;
        /// <summary>Neighbours k that p_knn averages over (capped at the store size). Default 16.</summary>
        public int NeighborCount = 16;
        /// <summary>Initial retrieval temperature τ (learned during training, then tuned with the mix on the validation rows: ValidationSet or held-out store rows). Default 0.1.</summary>
        public double InitialTemperature = 0.1;
        /// <summary>Learn τ during training. Default true.</summary>
        public bool LearnTemperature = true;
        /// <summary>
        /// λ, the weight of retrieval in the prediction. Null: tuned on the validation rows when there are any
        /// (<see cref="ValidationSet"/>, or the store entries held out by <see cref="StoreValidationShare"/>: by default a
        /// tenth of a given store's generated entries), else 0.5. Set 0 to predict from the head alone. Default null.
        /// </summary>
        public double? RetrievalWeight;
        /// <summary>
        /// Entries the term-match retrieval averages over: the store entries with the highest TF-IDF cosine to the query
        /// over the student's own tokens (<see cref="LexicalIndex"/>; no trained parameters, saved with the model).
        /// It brings evidence the embedding does not (the words themselves) and is weighted by μ
        /// (<see cref="LexicalRetrievalWeight"/>). It is used only when the store holds at least 4 × k entries (below that
        /// the top k is most of the store; <see cref="LexicalIndex.MinimumEntriesPerNeighbor"/>). 0 turns it off. Default 128.
        /// </summary>
        public int LexicalNeighborCount = LexicalIndex.DefaultNeighborCount;
        /// <summary>
        /// μ, the weight of term-match retrieval in the prediction (λ + μ ≤ 1). Null: tuned with λ on the validation rows
        /// when there are any (as <see cref="RetrievalWeight"/>), else 0. Above 0.5 with <see cref="RetrievalWeight"/> unset
        /// it needs validation rows, a <see cref="ValidationSet"/> or <see cref="StoreValidationShare"/> (an untuned λ is
        /// 0.5; the trainer says so rather than cut μ). Default null.
        /// </summary>
        public double? LexicalRetrievalWeight;
        /// <summary>
        /// How λ, μ and the temperatures are chosen on <see cref="ValidationSet"/>: <see cref="MixSelection.LowestNll"/>
        /// takes the grid point of lowest validation NLL; <see cref="MixSelection.BootstrapAverage"/> makes that choice on
        /// 200 resamples of the validation rows and averages λ and μ over them (bagging). Tens of real rows leave the
        /// lowest-NLL point jumping between distant mixes from seed to seed; the average is the steadier choice.
        /// <see cref="MixSelection.HighestAccuracy"/> takes the most accurate grid point, for thousands of tuning rows
        /// (<see cref="TuneMix"/> after <see cref="RetrievalClassifierTransformer.WithAddedKnowledge"/>). Default LowestNll.
        /// </summary>
        public MixSelection MixSelection = MixSelection.LowestNll;
        /// <summary>False disables retrieval entirely: no retrieval loss, λ = 0 and μ = 0. Default true.</summary>
        public bool UseRetrieval = true;

        /// <summary>Teacher parameter count, for the size ratio the trainer logs and the transformer reports. Default null.</summary>
        public long? TeacherParameterCount;
        /// <summary>Rows per forward pass when Transform scores an IDataView. Default 64.</summary>
        public int InferenceBatchSize = 64;
        /// <summary>
        /// Seed (null: the MLContext seed, else 1). Training is deterministic for a given seed and number of torch threads
        /// (<c>torch.set_num_threads</c>; another count rounds sums in another order and trains another student).
        /// </summary>
        public int? Seed;
        /// <summary>Optional progress sink (one report per epoch; with a <see cref="Backbone"/>, also its pass over the store texts, stage "Backbone features").</summary>
        public IProgress<TrainingProgress>? Progress;
        /// <summary>Cancels training.</summary>
        public CancellationToken CancellationToken;

        /// <summary>A copy of every setting (the stores and data views they name are immutable, and shared).</summary>
        internal Options Copy() => (Options)MemberwiseClone();
    }

    /// <summary>λ when <see cref="Options.RetrievalWeight"/> is unset and not tuned on a validation set.</summary>
    internal const double UntunedRetrievalWeight = 0.5;

    private readonly IHostEnvironment _env;
    private readonly Options _options;

    internal RetrievalClassifierTrainer(IHostEnvironment env, Options options)
    {
        _env = env ?? throw new ArgumentNullException(nameof(env));
        // A copy, as ML.NET's trainers keep theirs: an edit of the caller's object after this point would change what Fit
        // does (or a Fit in flight) with values never checked here.
        _options = options = (options ?? throw new ArgumentNullException(nameof(options))).Copy();
        void Check(bool ok, string message) { if (!ok) throw new ArgumentOutOfRangeException(nameof(options), message); }
        foreach (var (value, name) in new[] { (options.LabelColumnName, "LabelColumnName"), (options.TextColumnName, "TextColumnName"),
                     (options.ScoreColumnName, "ScoreColumnName"), (options.PredictedLabelColumnName, "PredictedLabelColumnName") })
            Check(!string.IsNullOrWhiteSpace(value), $"{name} must be set.");
        Check(options.TokenDropout is >= 0 and < 1, $"TokenDropout must be in [0, 1), found {options.TokenDropout}.");
        Check(options.Epochs >= 0, $"Epochs must be >= 0, found {options.Epochs}.");
        Check(options.EarlyStoppingPatience is null or >= 0, $"EarlyStoppingPatience must be >= 0, found {options.EarlyStoppingPatience}.");
        Check(options.EarlyStoppingMinPatienceSteps >= 0, $"EarlyStoppingMinPatienceSteps must be >= 0, found {options.EarlyStoppingMinPatienceSteps}.");
        Check(options.StoreValidationShare is null or (>= 0 and < 1), $"StoreValidationShare must be in [0, 1), found {options.StoreValidationShare}.");
        Check(options.StoreValidationShare is null or 0 || options.ValidationSet is null,
            $"StoreValidationShare is {options.StoreValidationShare} and a ValidationSet is given; set one of them, not both.");
        Check(options.MixWeightColumnName is null || options.ValidationSet is not null,
            $"MixWeightColumnName '{options.MixWeightColumnName}' names a column of the ValidationSet, which is not given.");
        Check(options.EarlyStoppingPatience is null or 0 || HasValidation(options),
            $"EarlyStoppingPatience is {options.EarlyStoppingPatience} but there is no ValidationSet (or StoreValidationShare) to choose the epoch on.");
        Check(options.EarlyStoppingPatience is null or 0 || options.Backbone is null,
            $"EarlyStoppingPatience is {options.EarlyStoppingPatience}, but it applies to the tiny student only, not with a Backbone ('{options.Backbone}').");
        Check(options.BatchSize >= 1, $"BatchSize must be >= 1, found {options.BatchSize}.");
        // The trainer builds its tokenizer itself, past the tokenizer estimator's check, so it asks the same question.
        if (options.SecondTextColumnName is not null && TextTokenizingEstimator.PairRoomError(options.MaxLength) is { } noRoom)
            throw new ArgumentOutOfRangeException(nameof(options), noRoom);
        Check(options.LearningRate > 0 && double.IsFinite(options.LearningRate), $"LearningRate must be positive and finite, found {options.LearningRate}.");
        Check(options.WeightDecay >= 0 && double.IsFinite(options.WeightDecay), $"WeightDecay must be >= 0 and finite, found {options.WeightDecay}.");
        Check(options.VocabularyPath is not null || options.Backbone is not null || options.MaxVocabularySize >= WordPieceVocabulary.MinimumBuildSize,
            $"MaxVocabularySize must be at least {WordPieceVocabulary.MinimumBuildSize} (the special tokens and two words), found {options.MaxVocabularySize}.");
        Check(options.MinWordFrequency >= 1, $"MinWordFrequency must be >= 1, found {options.MinWordFrequency}.");
        Check(options.NeighborCount >= 1, $"NeighborCount must be >= 1, found {options.NeighborCount}.");
        Check(options.NeighborsToReport >= 1, $"NeighborsToReport must be >= 1, found {options.NeighborsToReport}.");
        Check(options.InitialTemperature > 0 && double.IsFinite(options.InitialTemperature), $"InitialTemperature must be positive and finite, found {options.InitialTemperature}.");
        Check(options.RetrievalWeight is null || options.RetrievalWeight is >= 0 and <= 1, $"RetrievalWeight must be in [0, 1], found {options.RetrievalWeight}.");
        Check(options.LexicalNeighborCount >= 0, $"LexicalNeighborCount must be >= 0, found {options.LexicalNeighborCount}.");
        Check(options.LexicalRetrievalWeight is null || options.LexicalRetrievalWeight is >= 0 and <= 1,
            $"LexicalRetrievalWeight must be in [0, 1], found {options.LexicalRetrievalWeight}.");
        Check(options.LexicalRetrievalWeight is not > 0 || options.LexicalNeighborCount > 0,
            $"LexicalRetrievalWeight is {options.LexicalRetrievalWeight} but LexicalNeighborCount is 0 (term-match retrieval off).");
        Check((options.RetrievalWeight ?? 0) + (options.LexicalRetrievalWeight ?? 0) <= 1 + 1e-9,
            $"RetrievalWeight + LexicalRetrievalWeight must be at most 1, found {options.RetrievalWeight} + {options.LexicalRetrievalWeight}.");
        // Untuned, λ is UntunedRetrievalWeight: a fixed μ above 1 − λ would leave no valid mix (it used to be cut silently).
        Check(!(options.UseRetrieval && options.RetrievalWeight is null && !HasValidation(options)
                && options.LexicalRetrievalWeight > 1 - UntunedRetrievalWeight + 1e-9),
            $"LexicalRetrievalWeight is {options.LexicalRetrievalWeight} with RetrievalWeight unset and no ValidationSet to tune it: λ is then " +
            $"{UntunedRetrievalWeight} and λ + μ must be at most 1; set RetrievalWeight <= {1 - options.LexicalRetrievalWeight:G3}, " +
            $"LexicalRetrievalWeight <= {1 - UntunedRetrievalWeight}, or give a ValidationSet.");
        Check(options.RetrievalLossWeight >= 0 && double.IsFinite(options.RetrievalLossWeight), $"RetrievalLossWeight must be >= 0 and finite, found {options.RetrievalLossWeight}.");
        Check(options.ContrastiveLossWeight >= 0 && double.IsFinite(options.ContrastiveLossWeight), $"ContrastiveLossWeight must be >= 0 and finite, found {options.ContrastiveLossWeight}.");
        Check(options.ContrastiveTemperature > 0 && double.IsFinite(options.ContrastiveTemperature), $"ContrastiveTemperature must be positive and finite, found {options.ContrastiveTemperature}.");
        Check(options.InferenceBatchSize >= 1, $"InferenceBatchSize must be >= 1, found {options.InferenceBatchSize}.");
        Check(options.TeacherParameterCount is null || options.TeacherParameterCount > 0, $"TeacherParameterCount must be positive, found {options.TeacherParameterCount}.");
        Check(options.StoreData is null || GivenStoreObject is null, "Set StoreData or the obsolete Store, not both.");
        Check(options.EmbeddingRank >= 0, $"EmbeddingRank must be >= 0, found {options.EmbeddingRank}.");
        // The factored rows pass through an [H, r] projection: a rank above H adds parameters and no capacity, and the start
        // from given vectors needs that projection's columns orthonormal, which r > H columns cannot be.
        Check(options.EmbeddingRank <= options.HiddenSize || options.Backbone is not null,
            $"EmbeddingRank ({options.EmbeddingRank}) must be at most HiddenSize ({options.HiddenSize}).");
        Check(options.TokenEmbeddingsPath is null || options.VocabularyPath is not null,
            $"TokenEmbeddingsPath ('{options.TokenEmbeddingsPath}') needs VocabularyPath: its vectors are one per token of that vocabulary.");
        Check(options.TokenEmbeddingsPath is null || File.Exists(options.TokenEmbeddingsPath), $"TokenEmbeddingsPath '{options.TokenEmbeddingsPath}' not found.");
        Check(options.Backbone is null || (options.TokenEmbeddingsPath is null && options.EmbeddingRank == 0),
            "TokenEmbeddingsPath and EmbeddingRank shape the tiny student's embeddings; a Backbone brings its own.");
        CheckBackbone(options);
        Config(vocabularySize: 100, labelCount: 2).Validate();
    }

    /// <summary>Whether λ, μ, τ and the epoch have rows to be chosen on: a validation set, or held-out store entries.</summary>
    private static bool HasValidation(Options options) => options.ValidationSet is not null || StoreShare(options) > 0;

    /// <summary>
    /// The share of generated store entries held out: the option's, or by default 0.1 when a store is given and no
    /// ValidationSet (a store built from the training rows has nothing generated to hold out).
    /// </summary>
    private static double StoreShare(Options options) =>
        options.StoreValidationShare ?? (options.ValidationSet is null && HasStore(options) ? Options.Defaults.StoreValidationShare : 0);

    private static bool HasStore(Options options) => options.StoreData is not null || StoreObjectOf(options) is not null;

    /// <summary>The early-stopping patience: the option's, or by default 3 on held-out store entries for the tiny student.</summary>
    private static int Patience(Options options) => options.EarlyStoppingPatience
        ?? (options.ValidationSet is null && StoreShare(options) > 0 && options.Backbone is null ? Options.Defaults.EarlyStoppingPatience : 0);

#pragma warning disable CS0618 // the one place that reads the obsolete object path
    private static KnowledgeStore? StoreObjectOf(Options options) => options.Store;
#pragma warning restore CS0618
    private KnowledgeStore? GivenStoreObject => StoreObjectOf(_options);

    private StudentConfig Config(int vocabularySize, int labelCount) => new(vocabularySize, _options.HiddenSize, _options.Layers, _options.Heads,
        _options.FeedForwardSize > 0 ? _options.FeedForwardSize : 2 * _options.HiddenSize, _options.MaxLength, _options.Pooling, labelCount, _options.Dropout)
        { EmbeddingRank = _options.EmbeddingRank };

    /// <summary>Builds the store and vocabulary, trains the student with retrieval, tunes λ/τ and returns the transformer.</summary>
    public RetrievalClassifierTransformer Fit(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        var student = Train(input);
        // A bool or number label keyed by MapValueToKey: PredictedLabel's key values take its type, as ML.NET's trainers' do.
        var labelValueType = input.Schema.GetColumnOrNull(_options.LabelColumnName) is { } label ? LabelColumn.KeyValueType(label) : null;
        return labelValueType is null ? student : student.WithColumns(student.Columns with { LabelValueType = labelValueType });
    }

    private RetrievalClassifierTransformer Train(IDataView input)
    {
        var host = new ComponentHost(_env, nameof(RetrievalClassifierTrainer), _options.Seed, _options.Progress, _options.CancellationToken);
        var (rows, labelNames, keyed) = ReadRows(input, host, "training data");
        var (store, validation) = Validation(ComposeStore(rows, labelNames, keyed, host), rows, host);
        if (store.Count < 2) throw new ArgumentException($"Training needs at least 2 labelled rows with text; the store holds {store.Count}.", nameof(input));
        RequireEntriesOfTwoLabels(store, validation is not null && _options.ValidationSet is null, host);
        if (_options.Backbone is not null) return FitWithBackbone(store, validation, host);

        var vocabulary = _options.VocabularyPath is not null
            ? WordPieceVocabulary.Load(_options.VocabularyPath, _options.LowerCase)
            : StudentVocabulary.Build(store.Entries.SelectMany(e => new[] { e.Text, e.Text2 }).OfType<string>(),
                _options.MaxVocabularySize, _options.MinWordFrequency, _options.LowerCase, _options.CharacterPieces);
        var tokenizer = new TextTokenizingTransformer(_env, _options.TextColumnName, _options.SecondTextColumnName, "TokenIds", _options.MaxLength, vocabulary);
        int truncated = 0;
        var ids = store.Entries.Select(e => { var r = tokenizer.Encode(e.Text!, e.Text2, out bool t); if (t) truncated++; return r; }).ToList();
        if (truncated > 0) host.Warning($"{truncated} of {store.Count} store texts are longer than MaxLength = {_options.MaxLength} tokens and were truncated.");

        var config = Config(vocabulary.Count, store.LabelCount);
        var device = host.ResolveDevice();
        var model = new StudentModel(config, _options.InitialTemperature);
        try
        {
            using (var generator = new Generator((ulong)host.Seed))
            {
                model.Initialize(generator);
                if (_options.TokenEmbeddingsPath is { } embeddingsPath)
                {
                    var (vectors, width) = TeacherTokenVocabulary.ReadEmbeddings(embeddingsPath);
                    model.InitializeTokenEmbeddings(vectors, width, generator, embeddingsPath);
                    host.Info($"Student token embeddings start from {embeddingsPath} ([{vocabulary.Count}, {width}]" +
                              (config.EmbeddingRank > 0 ? $", best rank-{config.EmbeddingRank} approximation)." : ")."));
                }
            }
            model.to(device);
            long parameters = model.CountParameters();
            host.Info($"Student: {config.Layers} layers, hidden {config.HiddenSize}, {config.Heads} heads, vocabulary {vocabulary.Count}; " +
                      $"{parameters:N0} parameters ({config.EmbeddingParameterCount:N0} in embeddings)" +
                      (_options.TeacherParameterCount is long teacher ? $" = {100.0 * parameters / teacher:G3}% of the teacher's {teacher:N0}." : "."));

            bool retrieval = _options.UseRetrieval;
            var settings = new TrainingSettings(_options.Epochs, _options.BatchSize, _options.LearningRate, _options.WeightDecay,
                retrieval ? _options.RetrievalLossWeight : 0, _options.ContrastiveLossWeight, _options.ContrastiveTemperature,
                _options.NeighborCount, _options.LearnTemperature && retrieval, host.Seed, _options.TokenDropout, vocabulary.UnknownId);
            var lexical = TermMatchIndex(store, ids, tokenizer.Vocabulary, host);
            var scorer = RetrievalTraining.Scorer(model, vocabulary.SepId, device);
            var validationIds = validation is null ? null : Tokenized(validation, store, tokenizer, host);
            // No validation rows with a patience only by default: a store with no generated entries to hold out.
            var selection = Patience(_options) > 0 && validationIds is not null
                ? EpochSelection(validationIds, scorer, store, lexical, model, device, host)
                : null;
            RetrievalTraining.Train(model, new TrainingExamples(ids, store.SoftLabels.ToArray(), store.LabelCount), settings, vocabulary.SepId, device, host, selection);
            RetrievalTraining.CheckFinite(model);

            float[] embeddings;
            using (var memory = RetrievalTraining.EmbedAll(model, ids, vocabulary.SepId, device, checkAlive: host.CheckAlive))
            using (var cpu = memory.cpu())
                embeddings = cpu.data<float>().ToArray();
            store = store.WithEmbeddings(embeddings, config.HiddenSize);
            return Finish(config, model.ToWeights(), tokenizer, store, validationIds, lexical, model.TemperatureValue, scorer, host, device);
        }
        finally
        {
            model.Dispose(); // the transformer holds the weights in managed memory
        }
    }

    /// <summary>The term-match index over the store's token ids, or null when term matching is off (logged; a fixed μ &gt; 0 then fails).</summary>
    private LexicalIndex? TermMatchIndex(KnowledgeStore store, IReadOnlyList<int[]> ids, WordPieceVocabulary vocabulary, ComponentHost host)
    {
        bool retrieval = _options.UseRetrieval;
        // Term matching votes among the k entries that share the most words with the query, so the store must be
        // several times k (LexicalIndex.MinimumEntriesPerNeighbor says why).
        bool termMatching = retrieval && LexicalIndex.IsLargeEnough(store.Count, _options.LexicalNeighborCount);
        if (retrieval && _options.LexicalNeighborCount > 0 && !termMatching)
            host.Info($"Term-match retrieval off: the store holds {store.Count} entries, it needs {LexicalIndex.MinimumEntriesPerNeighbor} × LexicalNeighborCount = " +
                      $"{LexicalIndex.MinimumEntriesPerNeighbor * _options.LexicalNeighborCount}.");
        if (!termMatching && _options.LexicalRetrievalWeight > 0)
            throw new ArgumentException($"LexicalRetrievalWeight is {_options.LexicalRetrievalWeight}, but term-match retrieval is off (store of {store.Count} entries, " +
                                        $"LexicalNeighborCount {_options.LexicalNeighborCount}, UseRetrieval {_options.UseRetrieval}).");
        return termMatching
            ? LexicalIndex.Build(ids, vocabulary)
            : null;
    }

    /// <summary>
    /// The last steps of every student: λ, μ and the temperatures (tuned on <see cref="Options.ValidationSet"/> when
    /// given, through <paramref name="scorer"/>), then the runtime model and its transformer.
    /// </summary>
    private RetrievalClassifierTransformer Finish(StudentConfig config, StudentWeights weights, TextTokenizingTransformer tokenizer, KnowledgeStore store,
        ValidationRows? validation, LexicalIndex? lexical, double learnedTemperature, Func<IReadOnlyList<int[]>, (Tensor Pooled, Tensor HeadProbabilities)> scorer,
        ComponentHost host, Device device, StudentBackbone? backbone = null)
    {
        bool retrieval = _options.UseRetrieval;
        double mu = lexical is null ? 0 : _options.LexicalRetrievalWeight ?? 0;
        // The options check keeps λ + μ ≤ 1 when nothing is tuned; with validation rows λ is tuned under 1 − μ (a validation
        // set of no usable row fails), so this untuned λ yields to μ only as a guard.
        var mix = new Mix(retrieval ? _options.RetrievalWeight ?? Math.Min(UntunedRetrievalWeight, 1 - mu) : 0, mu, learnedTemperature, 1.0);
        if (retrieval && validation is not null)
            mix = TuneOnValidation(validation, scorer, store, lexical, mix, host, device);

        var retrievalModel = new RetrievalModel(config, weights, tokenizer, store, mix.Temperature, _options.NeighborCount,
            lexical, _options.LexicalNeighborCount, mix.LexicalTemperature, backbone: backbone);
        return new RetrievalClassifierTransformer(_env, retrievalModel, mix.Dense, new TransformerColumns(_options.TextColumnName,
            _options.SecondTextColumnName, _options.ScoreColumnName, _options.PredictedLabelColumnName, _options.NeighborsColumnName,
            _options.NeighborsToReport, _options.InferenceBatchSize), _options.TeacherParameterCount, _options.SaveStoreTexts, mix.Lexical);
    }

    /// <summary>
    /// Chooses λ, μ and the two temperatures of a trained <paramref name="student"/> again, on <paramref name="validation"/>,
    /// the way <see cref="Fit"/> chooses them on <see cref="Options.ValidationSet"/>: these options' text, label and weight
    /// columns, <see cref="Options.MixSelection"/>, and a fixed <see cref="Options.RetrievalWeight"/> or
    /// <see cref="Options.LexicalRetrievalWeight"/> if set. The student's weights, store and k are kept. For a student whose
    /// store grew after training (<see cref="RetrievalClassifierTransformer.WithAddedKnowledge"/>): the head never saw the
    /// added entries, so only a mix chosen again lets them count. The rows must be new to the student: neither its
    /// training rows nor store entries (rows that are store entries are left out, with a warning), and drawn like the
    /// inputs it will serve (the teacher's labels of other text of the same kind as the added entries, for example),
    /// never the rows it is scored on.
    /// </summary>
    /// <exception cref="ArgumentException">
    /// These options read one text and the student sentence pairs, or the other way round (<see cref="Options.SecondTextColumnName"/>);
    /// or they fix <see cref="Options.LexicalRetrievalWeight"/> above 0 for a student without a term-match index; or every
    /// row is a store entry (the student's training rows, say), leaving nothing to choose the mix on.
    /// </exception>
    public RetrievalClassifierTransformer TuneMix(RetrievalClassifierTransformer student, IDataView validation)
    {
        ArgumentNullException.ThrowIfNull(student);
        ArgumentNullException.ThrowIfNull(validation);
        if (!_options.UseRetrieval) throw new InvalidOperationException("UseRetrieval is off in these options: there is no mix to choose.");
        // The rows are read with these options' columns: a pair student's rows read without their second text (or a
        // one-text student's read as pairs) are inputs it never saw, and the mix would be chosen on them.
        if ((_options.SecondTextColumnName is null) != (student.SecondTextColumnName is null))
            throw new ArgumentException(student.SecondTextColumnName is null
                ? $"TuneMix: the student reads one text (column '{student.Columns.Text}'), but these options' SecondTextColumnName is " +
                  $"'{_options.SecondTextColumnName}': the rows would be read as sentence pairs it never saw. Leave SecondTextColumnName unset."
                : $"TuneMix: the student reads sentence pairs (columns '{student.Columns.Text}' and '{student.SecondTextColumnName}'), but these options' " +
                  "SecondTextColumnName is not set: the rows would be read without their second text. Set SecondTextColumnName to the pairs' second column.",
                nameof(student));
        var host = new ComponentHost(_env, nameof(TuneMix), _options.Seed, _options.Progress, _options.CancellationToken);
        var model = student.Model;
        // As Fit refuses it: without a term index the grid holds μ = 0 alone, and a fixed μ would be dropped.
        if (_options.LexicalRetrievalWeight > 0 && model.Lexical is null)
            throw new ArgumentException($"TuneMix: LexicalRetrievalWeight is {_options.LexicalRetrievalWeight}, but the student has no term-match index " +
                                        "(its store was too small for one, or grew without one); leave LexicalRetrievalWeight unset.", nameof(student));
        var rows = Tokenized(ReadRows(validation, host, "validation set", _options.ValidationWeightColumnName, _options.MixWeightColumnName).Rows,
            model.Store, model.Tokenizer, host);
        var device = host.ResolveDevice();
        int labels = model.LabelCount, d = model.Dimension;
        // The runtime network's own outputs (managed code), so the mix is chosen on exactly what the model predicts with.
        (Tensor Pooled, Tensor HeadProbabilities) Scorer(IReadOnlyList<int[]> ids)
        {
            var pooled = new float[ids.Count * d];
            var probabilities = new float[ids.Count * labels];
            Parallel.For(0, ids.Count, i => model.EncodeAndClassify(ids[i], pooled.AsSpan(i * d, d), probabilities.AsSpan(i * labels, labels)));
            return (torch.tensor(pooled, [ids.Count, d], device: device), torch.tensor(probabilities, [ids.Count, labels], device: device));
        }
        var untuned = new Mix(student.RetrievalWeight, student.LexicalRetrievalWeight, model.Temperature, model.LexicalTemperature);
        var mix = TuneOnValidation(rows, Scorer, model.Store, model.Lexical, untuned, host, device, model.NeighborCount, model.LexicalNeighborCount);
        var tuned = new RetrievalModel(model.Config, model.Weights, model.Tokenizer, model.Store, mix.Temperature, model.NeighborCount,
            model.Lexical, model.LexicalNeighborCount, mix.LexicalTemperature, model.IndexKind, model.Backbone, model.EncoderFingerprint);
        return student.With(tuned, mix.Dense, mix.Lexical);
    }

    /// <summary>λ, μ and the two temperatures a prediction uses.</summary>
    private readonly record struct Mix(double Dense, double Lexical, double Temperature, double LexicalTemperature);

    /// <summary>The validation set's usable rows as token ids, label indices in the store's order and weights.</summary>
    private sealed record ValidationRows(IReadOnlyList<int[]> Ids, int[] Labels, float[] Weights, float[] MixWeights)
    {
        public int Count => Ids.Count;
    }

    /// <summary>
    /// The store to train on and the rows to choose λ, μ, τ and the epoch on: <see cref="Options.ValidationSet"/>'s, or
    /// <see cref="Options.StoreValidationShare"/> of the store's generated entries taken out of it; null when neither is set
    /// or nothing would read them (no retrieval mix to tune and no epoch to choose: the store then keeps every entry).
    /// </summary>
    /// <remarks>
    /// Entries whose text must stay are never held out: one whose text the store holds again (<see cref="StoreHoldOut.Split"/>),
    /// and one whose text is a training row's (the store absorbed that row, so holding the entry out would take the user's
    /// gold row out of training).
    /// </remarks>
    private (KnowledgeStore Store, List<Row>? Validation) Validation(KnowledgeStore store, List<Row> trainingRows, ComponentHost host)
    {
        if (!_options.UseRetrieval && Patience(_options) == 0) return (store, null);
        if (_options.ValidationSet is { } given) return (store, ReadRows(given, host, "validation set", _options.ValidationWeightColumnName, _options.MixWeightColumnName).Rows);
        double share = StoreShare(_options);
        if (!(share > 0)) return (store, null);
        var stay = trainingRows.Select(r => ((string?)r.Text, r.Text2)).ToHashSet();
        var (kept, heldOut) = StoreHoldOut.Split(store, share, host.Seed, stay);
        if (heldOut.Count == 0)
        {
            // Nothing to hold out: a store of training rows alone, or one too small for the share to take an entry. A share
            // or a patience that was asked for warns; the default share says it in one line, as λ then stays untuned.
            int generated = store.Entries.Count(e => e.Source != KnowledgeSource.FewShot);
            string why = generated == 0 ? $"the store has no generated entries to hold out ({store.Count} entries, all training rows)"
                : $"the store is too small to hold any entry out ({share} of its {generated} generated entries, less any whose text it holds again or a training row has, rounds to none)";
            string line = $"StoreValidationShare is {share}{(_options.StoreValidationShare is null ? " (the default without a ValidationSet)" : "")}, but {why}: " +
                          "no validation rows are held out, so λ and μ are not tuned (they keep RetrievalWeight's and LexicalRetrievalWeight's values, unset 0.5 and 0).";
            if (_options.StoreValidationShare is not null || _options.EarlyStoppingPatience > 0) host.Warning(line);
            else host.Info(line);
            // The store stays whole and λ untuned; only a patience that was asked for goes on, to fail on the rows it lacks.
            if (_options.EarlyStoppingPatience is not > 0) return (store, null);
        }
        else if (kept.Count < 2)
            // Said here, where the hold-out is known: the check after it said only "the store holds 0".
            throw new ArgumentException($"StoreValidationShare {share} held out {heldOut.Count} of the store's {store.Count} entries as validation rows, leaving {kept.Count} " +
                                        "to train on; training needs at least 2. Lower StoreValidationShare, or give training rows or a ValidationSet.");
        else
            host.Info($"Validation: {heldOut.Count} of the store's {store.Count} entries held out (StoreValidationShare {share}" +
                      (_options.StoreValidationShare is null ? ", the default without a ValidationSet" : "") + "), labelled with the teacher's most probable label.");
        return (kept, heldOut.Select(h => new Row(h.Entry.Text!, h.Entry.Text2, store.LabelNames[h.TeacherLabel])).ToList());
    }

    /// <summary>
    /// The validation rows as token ids, with their labels in the store's order. A row whose label the store does not know
    /// fails, as a training row's does: left out, a validation set with other labels (renamed, another task's) left λ, μ
    /// and τ untuned with only a warning in the log. A row whose text (pair) is a store entry is left out, with a warning,
    /// and rows that all are fail: the student trained on it and retrieves it at cosine 1 with its own label, so the mix
    /// and the epoch would be chosen on answers it looks up (the training rows given as the validation set tuned λ to 1
    /// at a validation NLL of 0 and 100 % accuracy, and nothing said so).
    /// </summary>
    private static ValidationRows Tokenized(List<Row> rows, KnowledgeStore store, TextTokenizingTransformer tokenizer, ComponentHost host)
    {
        var labelIndex = store.LabelNames.Select((n, i) => (n, i)).ToDictionary(p => p.n, p => p.i, StringComparer.Ordinal);
        int unknown = rows.Count(r => !labelIndex.ContainsKey(r.Label));
        if (unknown > 0)
        {
            int first = rows.FindIndex(r => !labelIndex.ContainsKey(r.Label));
            throw new ArgumentException($"Validation set: label '{rows[first].Label}' (usable row {first + 1}, '{Shorten(rows[first].Text)}'; {unknown} of {rows.Count} rows) " +
                                        $"is not one of the store's labels [{string.Join(", ", store.LabelNames)}].");
        }
        static (string?, string?) Key(string? text, string? text2) => (text, string.IsNullOrEmpty(text2) ? null : text2);
        var stored = store.Entries.Where(e => e.Text is not null).Select(e => Key(e.Text, e.Text2)).ToHashSet();
        bool InStore(Row r) => stored.Contains(Key(r.Text, r.Text2));
        int firstInStore = rows.FindIndex(InStore);
        if (firstInStore >= 0)
        {
            var unseen = rows.Where(r => !InStore(r)).ToList();
            string found = $"Validation set: {rows.Count - unseen.Count} of {rows.Count} rows are store entries, which the student trained on and retrieves at cosine 1 " +
                           $"(the first: usable row {firstInStore + 1}, '{Shorten(rows[firstInStore].Text)}')";
            if (unseen.Count == 0)
                throw new ArgumentException($"{found}; no row is left to choose the mix and the epoch on. Give rows the student has not seen (not its training rows).");
            host.Warning($"{found}; they are left out of the validation rows.");
            rows = unseen;
        }
        return new ValidationRows(rows.Select(r => tokenizer.Encode(r.Text, r.Text2, out _)).ToList(), rows.Select(r => labelIndex[r.Label]).ToArray(),
            rows.Select(r => r.Weight).ToArray(), rows.Select(r => r.MixWeight ?? r.Weight).ToArray());
    }

    /// <summary>
    /// The per-epoch criterion of <see cref="Options.EarlyStoppingPatience"/>: the validation rows' weighted NLL under
    /// the prediction the student will make — the head alone without retrieval; with it, the lowest-NLL mix that
    /// <see cref="RetrievalTraining.Tune"/> finds over the epoch's store embeddings.
    /// </summary>
    private EpochSelection EpochSelection(ValidationRows validation, Func<IReadOnlyList<int[]>, (Tensor Pooled, Tensor HeadProbabilities)> scorer,
        KnowledgeStore store, LexicalIndex? lexical, StudentModel model, Device device, ComponentHost host)
    {
        if (validation.Count == 0 || !(validation.Weights.Sum() > 0))
            throw new ArgumentException($"EarlyStoppingPatience is {Patience(_options)}, but the validation set has no usable row with a positive weight " +
                                        $"({validation.Count} rows whose label the store knows).");
        bool onMix = _options.UseRetrieval && !_options.SelectEpochOnHead;
        var termMatches = lexical is null || !onMix ? null : TermMatches.Search(lexical, store, validation.Ids, _options.LexicalNeighborCount);
        var soft = store.SoftLabels.ToArray();
        return new EpochSelection(Patience(_options), _options.EarlyStoppingMinPatienceSteps, NeedsMemory: onMix, memory =>
        {
            if (memory is null) return RetrievalTraining.HeadNll(scorer, validation.Ids, validation.Labels, validation.Weights, device);
            using var softLabels = torch.tensor(soft, [store.Count, store.LabelCount], device: device);
            return RetrievalTraining.Tune(scorer, memory, softLabels, validation.Ids, validation.Labels, validation.Weights, _options.NeighborCount,
                model.TemperatureValue, _options.RetrievalWeight, termMatches, _options.LexicalRetrievalWeight, device, checkAlive: host.CheckAlive).Nll;
        });
    }

    private Mix TuneOnValidation(ValidationRows validation, Func<IReadOnlyList<int[]>, (Tensor Pooled, Tensor HeadProbabilities)> scorer, KnowledgeStore store,
        LexicalIndex? lexical, Mix untuned, ComponentHost host, Device device, int? neighborCount = null, int? lexicalNeighborCount = null)
    {
        // A validation set was given to choose the mix on; one of no usable row (keyed by a MapValueToKey that knew none of
        // its labels: every row key 0) left the untuned mix in a model that looked tuned, with only warnings in the log.
        if (validation.Count == 0)
            throw new ArgumentException("Validation set: no usable row (rows with a missing label or an empty text are skipped, as the log says); nothing " +
                                        "to choose λ, μ and τ on. Give rows whose labels the training Label column's keys know.");
        using var memory = torch.tensor(store.Embeddings.ToArray(), [store.Count, store.Dimension], device: device);
        using var soft = torch.tensor(store.SoftLabels.ToArray(), [store.Count, store.LabelCount], device: device);
        var termMatches = lexical is null ? null : TermMatches.Search(lexical, store, validation.Ids, lexicalNeighborCount ?? _options.LexicalNeighborCount);
        if (_options.MixWeightColumnName is not null && !(validation.MixWeights.Sum() > 0))
            throw new ArgumentException($"MixWeightColumnName '{_options.MixWeightColumnName}': no validation row has a positive weight ({validation.Count} rows whose label the store knows); nothing to tune the mix on.");
        var best = RetrievalTraining.Tune(scorer, memory, soft, validation.Ids, validation.Labels, validation.MixWeights,
            neighborCount ?? _options.NeighborCount, untuned.Temperature, _options.RetrievalWeight, termMatches, _options.LexicalRetrievalWeight, device, _options.MixSelection, host.Seed,
            host.CheckAlive);
        host.Info($"Tuned on {validation.Count} validation rows ({_options.MixSelection}): λ = {best.Lambda:G3}, τ = {best.Temperature:G3}" +
                  (lexical is null ? "" : $", μ = {best.Mu:G3}, τ_terms = {best.LexicalTemperature:G3}") +
                  $" (validation NLL {best.Nll:G5}, accuracy {best.Accuracy:P1}).");
        return new Mix(best.Lambda, best.Mu, best.Temperature, best.LexicalTemperature);
    }

    private sealed record Row(string Text, string? Text2, string Label, float Weight = 1, float? MixWeight = null);

    /// <summary>
    /// The usable rows; the label names (the label column's key values when it is a key, else its distinct values in
    /// ordinal order); and whether it is a key, whose order the student's scores must then follow.
    /// </summary>
    private (List<Row> Rows, string[] LabelNames, bool Keyed) ReadRows(IDataView data, ComponentHost host, string what, string? weightColumnName = null,
        string? mixWeightColumnName = null)
    {
        // A column missing from another view than the training data names that view (its columns alone did not say which).
        string? view = what == "training data" ? null : $"{char.ToUpperInvariant(what[0])}{what[1..]}";
        var label = LabelColumn.Require(data.Schema, _options.LabelColumnName, view);
        var text = TextColumns.Require(data.Schema, _options.TextColumnName, view);
        var text2 = _options.SecondTextColumnName is null ? (DataViewSchema.Column?)null : TextColumns.Require(data.Schema, _options.SecondTextColumnName, view);
        DataViewSchema.Column? WeightColumn(string? name)
        {
            if (name is null) return null;
            var column = data.Schema.GetColumnOrNull(name) ?? throw new ArgumentOutOfRangeException(nameof(data), $"{what}: weight column '{name}' not found.");
            return column.Type == NumberDataViewType.Single ? column
                : throw new ArgumentOutOfRangeException(nameof(data), $"{what}: weight column '{name}' must be Single, found {column.Type}.");
        }
        var weight = WeightColumn(weightColumnName);
        var mixWeight = WeightColumn(mixWeightColumnName);
        var columns = new List<DataViewSchema.Column> { label.Column, text };
        if (text2 is { } c2) columns.Add(c2);
        if (weight is { } w) columns.Add(w);
        if (mixWeight is { } mw && mw.Index != weight?.Index) columns.Add(mw);
        using var cursor = data.GetRowCursor(columns);
        var readLabel = label.Reader(cursor);
        var getText = cursor.GetGetter<ReadOnlyMemory<char>>(text);
        var getText2 = text2 is { } c ? cursor.GetGetter<ReadOnlyMemory<char>>(c) : null;
        var getWeight = weight is { } wc ? cursor.GetGetter<float>(wc) : null;
        var getMixWeight = mixWeight is { } mwc ? cursor.GetGetter<float>(mwc) : null;
        ReadOnlyMemory<char> a = default, b = default;
        long index = -1;
        float ReadWeight(ValueGetter<float>? get, string? name)
        {
            float value = 1;
            get?.Invoke(ref value);
            if (!(value >= 0) || !float.IsFinite(value))
                throw new InvalidDataException($"{what}, row {index}: weight column '{name}' holds {value}, expected a finite value ≥ 0.");
            return value;
        }
        var rows = new List<Row>();
        int missingLabel = 0, emptyText = 0;
        while (cursor.MoveNext())
        {
            index++;
            if ((index & 255) == 0) host.CheckAlive();
            var name = readLabel();
            getText(ref a);
            getText2?.Invoke(ref b);
            float rowWeight = ReadWeight(getWeight, weightColumnName), rowMixWeight = ReadWeight(getMixWeight, mixWeightColumnName);
            if (name is null) { missingLabel++; continue; }
            var s = a.ToString();
            // A text of only characters the tokenizer drops (a zero-width space, a NUL, a lone combining mark) encodes as an
            // empty one: it would train as [CLS] [SEP] with its label, where the runtime refuses such a text.
            if (!TextTokenizingTransformer.HasWordCharacter(s)) { emptyText++; continue; }
            var s2 = getText2 is null ? null : b.ToString();
            // A pair row without its second text encodes as [CLS] a [SEP] [SEP], which the runtime refuses: a validation row
            // would choose the epoch and the mix with it, a training row train it, and neither says so.
            if (getText2 is not null && TextInputs.MissingText(s2) is { } found)
                throw new ArgumentException($"{what}, row {index}: the student reads sentence pairs (column '{_options.SecondTextColumnName}'), so each row needs a second text; found {found}.");
            rows.Add(new Row(s, s2, name, rowWeight, getMixWeight is null ? null : rowMixWeight));
        }
        if (missingLabel > 0) host.Warning($"{what}: {missingLabel} rows have a missing label (key 0 or empty) in column '{_options.LabelColumnName}' and were skipped.");
        if (emptyText > 0) host.Warning($"{what}: {emptyText} rows have an empty text (or one the tokenizer reads as empty) in column '{_options.TextColumnName}' and were skipped.");
        host.Info($"{what}: {rows.Count} usable rows.");
        return (rows, label.KeyNames ?? rows.Select(r => r.Label).Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal).ToArray(), label.IsKey);
    }

    private KnowledgeStore ComposeStore(List<Row> rows, string[] dataLabelNames, bool keyed, ComponentHost host)
    {
        // A view without SlotNames on SoftLabel takes the training label column's names (its key order).
        var given = _options.StoreData is { } data ? KnowledgeStoreData.FromDataView(data, dataLabelNames) : GivenStoreObject;
        if (given is not null && keyed) given = InKeyOrder(given, dataLabelNames, host);
        var labelNames = given?.LabelNames.ToArray() ?? dataLabelNames;
        if (labelNames.Length < 2)
            throw new ArgumentException($"Column '{_options.LabelColumnName}' holds {labelNames.Length} distinct label(s); a classifier needs at least 2.");
        var index = labelNames.Select((n, i) => (n, i)).ToDictionary(p => p.n, p => p.i, StringComparer.Ordinal);
        var entries = new List<KnowledgeEntry>(given?.Entries ?? []);
        if (given is { HasTexts: false })
            throw new ArgumentException("The given knowledge store has no texts; the student needs texts to train its encoder.");
        // As a training row's: a text of only characters the tokenizer drops encodes as [CLS] [SEP], and the entry trained
        // that empty input with its label and stayed in the store as a neighbour, where the runtime refuses such a text.
        // Left out with a warning, as such training rows are: one odd sample of a generated store need not stop training.
        static bool NoWord(KnowledgeEntry e) => !TextTokenizingTransformer.HasWordCharacter(e.Text);
        int blank = entries.FindIndex(NoWord);
        if (blank >= 0)
        {
            var first = entries[blank];
            int count = entries.RemoveAll(NoWord);
            host.Warning($"Knowledge store: {count} entries have no text or one of no word character (only whitespace, control or zero-width characters, " +
                         $"combining marks), which the student would train as an empty input, and were left out (the first: entry {blank}, " +
                         $"'{Shorten(first.Text ?? "")}' labelled '{labelNames[first.Label]}').");
        }
        // Each store text's label, or -1 where its entries disagree (any training label then differs from one of them).
        var stored = new Dictionary<(string?, string?), int>();
        foreach (var e in entries)
            if (!stored.TryAdd((e.Text, e.Text2), e.Label) && stored[(e.Text, e.Text2)] != e.Label) stored[(e.Text, e.Text2)] = -1;
        var trained = new Dictionary<(string?, string?), int>();
        var gold = new List<KnowledgeEntry>();
        // Store texts a training row labels otherwise: the row's label is ground truth, the store's the teacher's guess (a
        // generated sample that repeats a few-shot text word for word), so the row replaces those entries.
        var overruled = new HashSet<(string?, string?)>();
        int conflicting = 0, firstConflict = -1, firstOverruled = -1, firstStoreLabel = -1;
        for (int r = 0; r < rows.Count; r++)
        {
            var row = rows[r];
            if (!index.TryGetValue(row.Label, out int label))
                throw new ArgumentException($"Training label '{row.Label}' is not one of the store's labels [{string.Join(", ", labelNames)}].");
            var key = ((string?)row.Text, row.Text2);
            if (trained.TryGetValue(key, out int earlier))
            {
                // An exact repeat adds nothing; a repeat with another label is data the student cannot honour twice.
                if (earlier != label && conflicting++ == 0) firstConflict = r;
                continue;
            }
            trained.Add(key, label);
            if (stored.TryGetValue(key, out int storeLabel))
            {
                // The same label: the entry stays, with the teacher's soft label over it.
                if (storeLabel == label) continue;
                if (overruled.Count == 0)
                    (firstOverruled, firstStoreLabel) = (r, entries.First(e => (e.Text, e.Text2) == key && e.Label != label).Label);
                overruled.Add(key);
            }
            gold.Add(KnowledgeEntry.Gold(row.Text, row.Text2, label, labelNames.Length));
        }
        if (overruled.Count > 0)
        {
            int replaced = entries.RemoveAll(e => overruled.Contains((e.Text, e.Text2)));
            var first = rows[firstOverruled];
            host.Warning($"{overruled.Count} training rows repeat the text of a store entry with another label, and replace the {replaced} store entries " +
                         $"of those texts: a training row's label is ground truth (the first: usable row {firstOverruled + 1}, '{Shorten(first.Text)}' " +
                         $"labelled '{first.Label}', in the store '{labelNames[firstStoreLabel]}').");
        }
        entries.AddRange(gold);
        if (conflicting > 0)
            host.Warning($"{conflicting} training rows repeat an earlier training row's text with another label, and the earlier row's label " +
                         $"was kept (the first: usable row {firstConflict + 1}, '{Shorten(rows[firstConflict].Text)}' labelled '{rows[firstConflict].Label}').");
        if (given is not null) host.Info($"Knowledge store: {given.Count} given entries + {gold.Count} gold training rows.");
        var composed = new KnowledgeStore(labelNames, entries);
        RequireSecondTexts(composed);
        if (!keyed) WarnOfOccurrenceOrder(rows, labelNames, host);
        return composed;
    }

    /// <summary>
    /// String labels: the Score slots follow the store's or the sorted label order, while MapValueToKey (ML.NET's way to
    /// make the key label its evaluator needs) numbers labels by first occurrence. ML.NET's evaluator reads slot i as key
    /// i + 1 without comparing names, so where the two orders differ (SST-2's seed-21 split starts with a "1") a student
    /// that scores 56.2 % was evaluated at 43.8 %, with nothing said. Warned about, with both orders.
    /// </summary>
    private void WarnOfOccurrenceOrder(List<Row> rows, string[] slotNames, ComponentHost host)
    {
        var byOccurrence = rows.Select(r => r.Label).Distinct(StringComparer.Ordinal).ToArray();
        if (byOccurrence.SequenceEqual(slotNames, StringComparer.Ordinal)) return;
        host.Warning($"Label column '{_options.LabelColumnName}' is String: Score slot i is label i of [{string.Join(", ", slotNames)}], but " +
                     $"MapValueToKey(\"{_options.LabelColumnName}\") fitted on these rows numbers them [{string.Join(", ", byOccurrence)}] (first occurrence), " +
                     "and ML.NET's evaluator reads slot i as key i + 1, so evaluated through such keys the scores would be read against other labels. " +
                     "Put MapValueToKey before the trainer: the student then scores in key order.");
    }

    /// <summary>
    /// Every entry has a second text exactly when the student reads one: trained on pairs and served on one text (or the
    /// other way round), the student would answer every query from an input it never saw. A pair entry's second text is
    /// judged as the runtime judges a query's (<see cref="TextInputs.MissingText"/>): one of only characters the
    /// tokenizer drops encodes as an empty one, which the runtime refuses.
    /// </summary>
    private void RequireSecondTexts(KnowledgeStore store)
    {
        bool pair = _options.SecondTextColumnName is not null;
        int mismatched = 0, first = -1;
        for (int i = 0; i < store.Count; i++)
            if ((pair ? TextInputs.MissingText(store.Entries[i].Text2) is not null : !string.IsNullOrWhiteSpace(store.Entries[i].Text2)) && mismatched++ == 0) first = i;
        if (mismatched == 0) return;
        throw new ArgumentException(pair
            ? $"SecondTextColumnName is '{_options.SecondTextColumnName}', but {mismatched} of {store.Count} store entries have no second text " +
              $"(the first: entry {first}, '{Shorten(store.Entries[first].Text ?? "")}', found {TextInputs.MissingText(store.Entries[first].Text2)}); " +
              "a sentence-pair student needs both texts on every entry."
            : $"The knowledge store has a second text on {mismatched} of {store.Count} entries (the first: entry {first}), but SecondTextColumnName is " +
              "not set: the student would train on sentence pairs and serve one text. Set SecondTextColumnName to the column of the pairs' second text.");
    }

    /// <summary>
    /// The store the student trains on holds entries of at least two labels. Keys listing labels the rows lack
    /// (MapValueToKey with keyData), or a store of one label, trained a head that answers that label for every input,
    /// with λ tuned to 1 and 100 % validation accuracy on held-out rows of that label, and nothing said. A label without
    /// an entry among others is warned about: the student predicts it only as far as other entries' soft labels give it mass.
    /// </summary>
    private void RequireEntriesOfTwoLabels(KnowledgeStore store, bool heldOut, ComponentHost host)
    {
        var counts = new int[store.LabelCount];
        foreach (var e in store.Entries) counts[e.Label]++;
        var without = store.LabelNames.Where((_, i) => counts[i] == 0).ToArray();
        string after = heldOut ? " (after the validation rows were held out)" : "";
        if (store.LabelCount - without.Length < 2)
        {
            int only = Array.FindIndex(counts, c => c > 0);
            throw new ArgumentException($"The store the student trains on{after} holds entries of one label only ('{store.LabelNames[only]}', {store.Count} entries) " +
                                        $"of the labels [{string.Join(", ", store.LabelNames)}]: the student would answer '{store.LabelNames[only]}' for every input. " +
                                        "Give training rows or store entries of at least 2 labels.");
        }
        if (without.Length > 0)
            host.Warning($"The store the student trains on{after} holds no entry of label(s) [{string.Join(", ", without)}] of [{string.Join(", ", store.LabelNames)}]; " +
                         "the student predicts them only as far as other entries' soft labels give them probability.");
    }

    private static string Shorten(string text) => text.Length <= 60 ? text : text[..59] + "…";

    /// <summary>
    /// The store with its labels in the order of the training Label column's keys. The student's Score slot i is its
    /// store's label i, and ML.NET's evaluators read slot i as key i + 1 of the Label column: a store in another order
    /// (the extractor's label order against a MapValueToKey fitted on rows whose first label is another) would be
    /// scored against swapped labels (an SST-2 student at 70 % read as 30 %). A store whose labels are not the keys'
    /// cannot be aligned and fails.
    /// </summary>
    private static KnowledgeStore InKeyOrder(KnowledgeStore store, string[] keyNames, ComponentHost host)
    {
        if (store.LabelNames.SequenceEqual(keyNames, StringComparer.Ordinal)) return store;
        var position = keyNames.Select((n, i) => (n, i)).ToDictionary(p => p.n, p => p.i, StringComparer.Ordinal);
        if (store.LabelCount != keyNames.Length || !store.LabelNames.All(position.ContainsKey))
            throw new ArgumentException($"The knowledge store's labels [{string.Join(", ", store.LabelNames)}] are not the training Label column's keys " +
                                        $"[{string.Join(", ", keyNames)}]; the student's scores are in key order, so both must hold the same labels " +
                                        "(map the Label column with keyData listing the store's labels).");
        var slot = store.LabelNames.Select(n => position[n]).ToArray();
        var entries = store.Entries.Select(e =>
        {
            var soft = new float[keyNames.Length];
            for (int i = 0; i < soft.Length; i++) soft[slot[i]] = e.SoftLabel[i];
            return e with { Label = slot[e.Label], SoftLabel = soft };
        });
        host.Info($"Knowledge store labels [{string.Join(", ", store.LabelNames)}] put in the order of the training Label column's keys " +
                  $"[{string.Join(", ", keyNames)}], so Score slot i is key i + 1.");
        return new KnowledgeStore(keyNames, entries);
    }

    /// <inheritdoc/>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        LabelColumn.Require(inputSchema, _options.LabelColumnName);
        TextColumns.Require(inputSchema, _options.TextColumnName);
        if (_options.SecondTextColumnName is not null) TextColumns.Require(inputSchema, _options.SecondTextColumnName);
        var columns = inputSchema.ToDictionary(c => c.Name);
        columns[_options.ScoreColumnName] = SchemaShapes.Vector(_options.ScoreColumnName, NumberDataViewType.Single, annotations: SchemaShapes.Annotations(
            SchemaShapes.Vector(AnnotationNames.SlotNames, TextDataViewType.Instance),
            SchemaShapes.Scalar(AnnotationNames.ScoreColumnKind, TextDataViewType.Instance),
            SchemaShapes.Scalar(AnnotationNames.ScoreValueKind, TextDataViewType.Instance),
            SchemaShapes.Scalar(AnnotationNames.ScoreColumnSetId, NumberDataViewType.UInt32, isKey: true),
            SchemaShapes.Vector(AnnotationNames.TrainingLabelValues, TextDataViewType.Instance)));
        var labelValues = inputSchema.First(c => c.Name == _options.LabelColumnName).Annotations.FirstOrDefault(a => a.Name == AnnotationNames.KeyValues);
        var predictedValues = labelValues.Name is not null && LabelColumn.IsKeyValueType(labelValues.ItemType) ? labelValues.ItemType : TextDataViewType.Instance;
        columns[_options.PredictedLabelColumnName] = SchemaShapes.Scalar(_options.PredictedLabelColumnName, NumberDataViewType.UInt32, isKey: true,
            annotations: SchemaShapes.Annotations(SchemaShapes.Vector(AnnotationNames.KeyValues, predictedValues)));
        if (_options.NeighborsColumnName is { } neighbors)
        {
            columns[neighbors] = SchemaShapes.Vector(neighbors, TextDataViewType.Instance);
            columns[neighbors + "Similarities"] = SchemaShapes.Vector(neighbors + "Similarities", NumberDataViewType.Single);
        }
        return new SchemaShape(columns.Values);
    }
}
