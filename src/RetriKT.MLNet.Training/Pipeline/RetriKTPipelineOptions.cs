using System.Globalization;
using Microsoft.ML;
using RetriKT.MLNet.Knowledge.Extraction;
using RetriKT.MLNet.SoftPrompt;
using RetriKT.MLNet.Student;
using RetriKT.MLNet.Text;

namespace RetriKT.MLNet.Pipeline;

/// <summary>
/// Options of <see cref="RetriKTPipeline"/>. The field defaults are small enough that one few-shot task runs in minutes
/// on two CPU cores; the Quickstart's embedded task runs on them. <see cref="EvaluatedRecipe"/> is what every tiny-student
/// row of docs/RESULTS.md was measured with (the evaluation harness), and what to start from with a real teacher and task.
/// </summary>
public sealed class RetriKTPipelineOptions
{
    /// <summary>Virtual tokens per label prompt. Default 8.</summary>
    public int PromptTokens = 8;
    /// <summary>Epochs of supervised prompt tuning (RetriKT stage 1). Default 10.</summary>
    public int SupervisedEpochs = 10;
    /// <summary>PPO iterations (RetriKT stage 2); 0 keeps the stage-1 prompts. Default 0.</summary>
    public int PpoSteps;
    /// <summary>Rollouts per PPO iteration. Default 16.</summary>
    public int RolloutsPerStep = 16;
    /// <summary>Adam learning rate of PPO (prompts and value head), or null for <see cref="SoftPrompt.SoftPromptPpoOptions.PpoLearningRate"/>'s default. Default null.</summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)] // unset: configuration keys as before the field
    public double? PpoLearningRate;
    /// <summary>PPO's trust region per iteration (see <see cref="SoftPrompt.SoftPromptPpoOptions.MaxUpdateKl"/>); null for its default, 0 turns it off. Default null.</summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)] // unset: configuration keys as before the field
    public double? PpoMaxUpdateKl;
    /// <summary>Generated samples kept per label in the knowledge store. Default 64.</summary>
    public int SamplesPerLabel = 64;
    /// <summary>Samples generated per teacher call during extraction (larger batches use the CPU/GPU better). Default 16.</summary>
    public int ExtractionBatchSize = 16;
    /// <summary>Most generated samples per label, as a multiple of <see cref="SamplesPerLabel"/>. Default 3.</summary>
    public double MaxAttemptsFactor = 3;
    /// <summary>Lowest teacher probability of the intended label for a generated sample to be kept. Default 0.5.</summary>
    public double FidelityThreshold = 0.5;
    /// <summary>Also require the intended label to be the teacher's most probable label. Default true.</summary>
    public bool RequireArgmax = true;
    /// <summary>
    /// File generated samples under the teacher's most probable label (see <c>KnowledgeExtractorOptions.AssignToTeacherLabel</c>):
    /// with weakly steering prompts it halves the generation a store needs. Default true.
    /// </summary>
    public bool AssignToTeacherLabel = true;
    /// <summary>Most new tokens per generated sample; null takes the task template's. Default null.</summary>
    public int? MaxNewTokens;
    /// <summary>
    /// Drop generated samples cut off at the token limit (see <c>KnowledgeExtractorOptions.DropUnfinished</c>); null
    /// keeps them, as every row of docs/RESULTS.md was measured. Default null.
    /// </summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)] // unset: configuration keys as before the field
    public bool? DropUnfinishedSamples;
    /// <summary>Student passes over the store: all of them, or with <see cref="StudentEarlyStoppingPatience"/> the most it trains. Default 30.</summary>
    public int StudentEpochs = 30;
    /// <summary>Student hidden size. Default 64.</summary>
    public int StudentHiddenSize = 64;
    /// <summary>Student transformer layers. Default 2.</summary>
    public int StudentLayers = 2;
    /// <summary>Student maximum tokens per row (pairs need more). Default 128.</summary>
    public int StudentMaxLength = 128;
    /// <summary>Neighbours k the student retrieves (capped at the store size). Default 16.</summary>
    public int StudentNeighborCount = 16;
    /// <summary>Student feed-forward size; 0 = 4 × hidden. Default 0.</summary>
    public int StudentFeedForwardSize;
    /// <summary>Largest vocabulary the student builds from the store's texts (its embedding matrix is most of its parameters). Default 8000.</summary>
    public int StudentMaxVocabulary = 8000;
    /// <summary>Add single-character pieces to the student's vocabulary so unseen words are spelled out. Default false.</summary>
    public bool StudentCharacterPieces;
    /// <summary>Student word dropout (token → [UNK]) while training. Default 0.2.</summary>
    public double StudentTokenDropout = 0.2;
    /// <summary>Weight of the student's retrieval loss KL(t ‖ p_knn) when retrieval is on. Default 1.</summary>
    public double StudentRetrievalLossWeight = 1.0;
    /// <summary>
    /// Tune the student's retrieval weight λ and temperature τ on the task's few-shot dev split (model selection
    /// only ever uses that split; the test split is only scored). Default true.
    /// </summary>
    public bool TuneOnFewShotDev = true;
    /// <summary>
    /// Share of the store's generated samples held out of the student's store and added, labelled with the teacher's
    /// most probable label, to the rows λ and τ are tuned on (with <see cref="TuneOnFewShotDev"/>). Thirty-two few-shot
    /// dev rows alone left λ anywhere in [0, 1] from seed to seed; a few hundred teacher-labelled rows pick the weight
    /// that agrees best with the teacher. 0 tunes on the few-shot dev split alone. Without <see cref="TuneOnFewShotDev"/>
    /// nothing is held out (the whole store is the student's). Default 0.1.
    /// </summary>
    public double StoreValidationShare = 0.1;
    /// <summary>
    /// The store students' early stopping (<c>RetrievalClassifierTrainer.Options.EarlyStoppingPatience</c>): with
    /// held-out store rows to tune on (<see cref="StoreValidationShare"/> and <see cref="TuneOnFewShotDev"/>), each epoch
    /// is scored on the tuning rows, the best epoch's weights are kept and training stops after this many epochs
    /// without improvement; <see cref="StudentEpochs"/> is then the most it trains. The few-shot student (no store, 32
    /// dev rows) always trains <see cref="StudentEpochs"/>, and so does a student on a <see cref="StudentBackbone"/> (the
    /// trainer stops only the tiny student early). On SST-2 the best epoch came at 2–3 of 30 and the students
    /// scored higher for it (docs/RESULTS.md). 0: off (train all epochs). Left out of JSON at 0, so results measured
    /// before the option existed (trained without it) keep their keys. Default 3.
    /// </summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingDefault)]
    public int StudentEarlyStoppingPatience = 3;
    /// <summary>
    /// Share of the tuning weight that the few-shot dev rows (real inputs) carry when held-out store rows are tuned on
    /// too; the held-out generated rows carry the rest. The held-out rows are text like the student's training data,
    /// where the head is at its best and term matching at its worst, so they pull the mix away from term matching that
    /// real queries reward. Null: <see cref="DefaultFewShotDevTuningShare"/>, and left out of JSON, so rows measured
    /// before the option existed keep their keys. Default null.
    /// </summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
    public double? FewShotDevTuningShare;
    /// <summary>
    /// Where it should differ from <see cref="FewShotDevTuningShare"/>: the few-shot dev rows' share of the weight when the
    /// mix (λ, μ, temperatures) is tuned; the epoch is still chosen with <see cref="FewShotDevTuningShare"/>. 1: the mix is
    /// chosen on the gold dev rows alone. Teacher-labelled held-out rows reward the part that imitates the teacher best,
    /// the head; on a store of real teacher-labelled sentences, term matching over many neighbours corrects some of the
    /// teacher's own errors, which only gold labels can show. Null: the same share. Left out of JSON when null. Default null.
    /// </summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
    public double? FewShotDevMixShare;
    /// <summary>The share <see cref="FewShotDevTuningShare"/> stands for when unset: each group half.</summary>
    public const double DefaultFewShotDevTuningShare = 0.5;
    /// <summary>
    /// Real, unlabelled in-domain text for the tuning rows: a .txt file, or a folder of them, with one document per line
    /// (<see cref="CorpusSentences"/>). <see cref="TuningCorpusRows"/> of its sentences are drawn (by
    /// <see cref="Seed"/>), labelled with the teacher's most probable label, and join the held-out generated rows in the
    /// teacher-labelled half of the rows the store student's epoch and mix are chosen on (<see cref="StoreValidationShare"/>).
    /// Generated rows have near-copies in the store, so on them the head and embedding retrieval look better than on real
    /// queries and term matching worse; real sentences, labelled by the teacher the student imitates, are what the
    /// student will be asked. Single-text tasks only; needs StoreValidationShare &gt; 0 and TuneOnFewShotDev (else training
    /// fails saying so). The text must not hold the task's test split. Left out of JSON (a
    /// path is no identity; whoever keys results on these options names the corpus). Default null (none).
    /// </summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public string? TuningCorpus;
    /// <summary>
    /// Sentences drawn from <see cref="TuningCorpus"/>; null: <see cref="DefaultTuningCorpusRows"/>. Keep it near the number
    /// of held-out generated rows: rows that outnumber them steer early stopping by real text alone, and on SST-2 with 512
    /// samples per label (102 held out against 800) that kept epoch 1 of a student whose epoch 5 scored 3 points higher.
    /// Left out of JSON when null. Default null.
    /// </summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
    public int? TuningCorpusRows;
    /// <summary>The count <see cref="TuningCorpusRows"/> stands for when unset: about as many as the held-out generated rows of a 4,096-per-label store.</summary>
    public const int DefaultTuningCorpusRows = 800;
    /// <summary>
    /// Real, unlabelled in-domain text for the student's store: a .txt file, or a folder of them, with one document per
    /// line (<see cref="CorpusSentences"/>). <see cref="StoreCorpusRows"/> of its sentences are drawn (by <see cref="Seed"/>),
    /// soft-labelled by the teacher (<see cref="Knowledge.Extraction.UnlabeledText"/>) and join the store before the
    /// validation share is held out, so the epoch and the mix are chosen on real sentences too. No generation: one
    /// teacher forward pass per sentence. Students without a store (<see cref="RetriKTPipeline.EvaluateFewShotStudent"/>) do
    /// not get it; <see cref="StoreExtraction.FewShotRows"/> gives a store of the few-shot rows alone, for distillation on
    /// the unlabelled text without generation. Single-text tasks only. The text must not hold the task's test split. Left out
    /// of JSON (a path is no identity; whoever keys results on these options names the corpus). Default null (none).
    /// </summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public string? StoreCorpus;
    /// <summary>
    /// Sentences drawn from <see cref="StoreCorpus"/>. Left out of JSON, as the corpus is, so that configuration keys
    /// stay as they were before the option. Default <see cref="DefaultStoreCorpusRows"/>.
    /// </summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public int StoreCorpusRows = DefaultStoreCorpusRows;
    /// <summary>The default of <see cref="StoreCorpusRows"/>: the size measured on SST-2 (8,192 taught the student less).</summary>
    public const int DefaultStoreCorpusRows = 32_768;
    /// <summary>
    /// Add <see cref="StoreCorpus"/> after training instead of before: the student trains on the store alone, then its
    /// store grows with the <see cref="StoreCorpusRows"/> teacher-labelled sentences
    /// (<c>RetrievalClassifierTransformer.WithAddedKnowledge</c>, no training) and its mix is chosen again
    /// (<c>RetrievalClassifierTrainer.TuneMix</c>) on <see cref="StoreCorpusTuningRows"/> sentences of other documents of the
    /// same text, labelled by the teacher (<see cref="CorpusSentences.DrawWithTuningDocuments"/>). What the sentences teach then reaches predictions only through retrieval: this measures
    /// knowledge added to a trained model, and costs one labelling pass instead of a training run. Needs a student with
    /// retrieval. Left out of JSON when false. Default false.
    /// </summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingDefault)]
    public bool StoreCorpusAfterTraining;
    /// <summary>Teacher-labelled sentences the mix is chosen on again with <see cref="StoreCorpusAfterTraining"/>. Left out of JSON. Default <see cref="DefaultStoreCorpusTuningRows"/>.</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public int StoreCorpusTuningRows = DefaultStoreCorpusTuningRows;
    /// <summary>The default of <see cref="StoreCorpusTuningRows"/>.</summary>
    public const int DefaultStoreCorpusTuningRows = 2048;
    /// <summary>
    /// How the mix is chosen again on the <see cref="StoreCorpusTuningRows"/> with <see cref="StoreCorpusAfterTraining"/>
    /// (<c>RetrievalClassifierTrainer.Options.MixSelection</c> of that <c>TuneMix</c>; the student's own tuning keeps
    /// <see cref="StudentMixSelection"/>); null takes <see cref="DefaultStoreCorpusMixSelection"/>. Null is left out of JSON,
    /// so results of runs without added knowledge keep their keys. Default null.
    /// </summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
    public Student.MixSelection? StoreCorpusMixSelection;
    /// <summary>
    /// The rule <see cref="StoreCorpusMixSelection"/> null takes: the most accurate mix on the thousands of tuning sentences.
    /// On SST-2 it beat the lowest-NLL mix on every seed: the evaluated recipe's student 77.9 % against 76.8 % over five
    /// seeds, and the README's student by 0.8 to 1.2 points (docs/RESULTS.md, thirtieth and thirty-first sessions).
    /// </summary>
    public const Student.MixSelection DefaultStoreCorpusMixSelection = Student.MixSelection.HighestAccuracy;
    /// <summary>
    /// Choose the store student's epoch on its head alone (<c>RetrievalClassifierTrainer.Options.SelectEpochOnHead</c>),
    /// as the student without retrieval is chosen, and tune the mix once at the end. With
    /// <see cref="StudentRetrievalLossWeight"/> = 0 the retrieval student's encoder and head are then those of the
    /// store-only student, so what retrieval adds is measured on one and the same model. Left out of JSON when false. Default false.
    /// </summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingDefault)]
    public bool StudentSelectEpochOnHead;
    /// <summary>
    /// Teacher-labelled variants (spans and word-dropped copies, <see cref="Knowledge.Extraction.StoreVariants"/>) made from
    /// each generated sample of the student's store, after the validation share is held out; 0: none. They cost the
    /// teacher one forward pass each and the student a proportionally longer training. Left out of JSON at 0, so earlier
    /// results keep their keys. Default 0.
    /// </summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingDefault)]
    public int StoreVariantsPerSample;
    /// <summary>Calibrate the teacher's verbalizer (contextual calibration) for soft labels and fidelity. Default true.</summary>
    public bool CalibrateVerbalizer = true;
    /// <summary>
    /// A pretrained encoder to build the student on (<c>RetrievalClassifierTrainer.Options.Backbone</c>: a
    /// SentenceTransformers.* package DLL or a Hugging Face BERT directory), or null for the tiny student. Left out of
    /// JSON: a path is no identity; whoever keys results on these options names the encoder itself. Default null.
    /// </summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public string? StudentBackbone;
    /// <summary>
    /// How many of the <see cref="StudentBackbone"/>'s top layers the student fine-tunes
    /// (<c>RetrievalClassifierTrainer.Options.TrainableBackboneLayers</c>; 0: frozen). Default 0.
    /// </summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingDefault)]
    public int StudentTrainableBackboneLayers;
    /// <summary>AdamW rate of the fine-tuned backbone layers; null: the trainer's default (2e-5, for MiniLM-sized encoders). Default null.</summary>
    /// <remarks>This and <see cref="StudentTrainableBackboneLayers"/> are left out of JSON at their defaults, so results keyed on these options before they existed keep their keys.</remarks>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingDefault)]
    public double? StudentBackboneLearningRate;
    /// <summary>
    /// Start the tiny student from the teacher's vocabulary and token embeddings (<see cref="Student.TeacherTokenVocabulary"/>,
    /// exported once per teacher into <see cref="WorkDirectory"/>, or a temporary folder): every word the teacher knows is a
    /// piece the student knows, placed where the teacher put it, instead of the few hundred words of the training rows.
    /// Needs <see cref="StudentEmbeddingRank"/> &gt; 0 when the teacher's width is not <see cref="StudentHiddenSize"/>.
    /// Default false.
    /// </summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingDefault)]
    public bool StudentEmbeddingsFromTeacher;
    /// <summary>Rank of the student's factored token embeddings (<c>RetrievalClassifierTrainer.Options.EmbeddingRank</c>; 0: a whole table). Default 0.</summary>
    /// <remarks>This and <see cref="StudentEmbeddingsFromTeacher"/> are left out of JSON at their defaults, so earlier results keep their keys.</remarks>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingDefault)]
    public int StudentEmbeddingRank;
    /// <summary>
    /// How the student's mix of head, retrieval and term matching is chosen on the tuning rows
    /// (<c>RetrievalClassifierTrainer.Options.MixSelection</c>). Left out of JSON at its default, so earlier results keep
    /// their keys. Default LowestNll.
    /// </summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingDefault)]
    public Student.MixSelection StudentMixSelection;
    /// <summary>Seed of every stage. Default 1.</summary>
    public int Seed = 1;
    /// <summary>Where the extraction checkpoint goes (an interrupted run resumes its generation), or null. Default null.</summary>
    public string? WorkDirectory;
    /// <summary>
    /// What an extraction checkpoint in <see cref="WorkDirectory"/> that belongs to other prompts meets: true moves it
    /// aside and generates afresh (the work directory as a cache); false stops with an <see cref="InvalidDataException"/>
    /// whose message starts with the checkpoint's path (a folder the user chose, whose contents are not the pipeline's
    /// to replace). Default true.
    /// </summary>
    public bool ReplaceMismatchedCheckpoint = true;
    /// <summary>Where prompt tuning writes its per-epoch and per-PPO-step metrics (CSV), or null. Default null.</summary>
    public string? PpoMetricsCsvPath;
    /// <summary>
    /// Keep the store's texts in the student's model.zip: needed to show the neighbours that explain a prediction
    /// (<c>RetrievalClassifierTransformer.Predict</c>, the neighbours column), costs size. Default false.
    /// </summary>
    public bool StudentSaveStoreTexts;
    /// <summary>When set, the student also outputs this column: the top store entries that explain each prediction. Default null.</summary>
    public string? StudentNeighborsColumnName;

    /// <summary>
    /// The settings every tiny-student row of docs/RESULTS.md was measured with (the evaluation harness's pipeline); start
    /// here with your own teacher and task. <see cref="SamplesPerLabel"/> and <see cref="PpoSteps"/> (0 here) are what cost
    /// time. Why each setting, measured on SST-2's 16-shot splits with the 5.8M-parameter stand-in teacher:
    /// <list type="bullet">
    /// <item>4,096 generated samples per label, filed under the teacher's label, 64 per teacher call: on seed 13, 128 / 512 /
    /// 2,048 / 4,096 per label gave 62.4 / 66.7 / 73.5 / 73.1 % (30 epochs) and 64.3 / 70.9 / 75.0 / 76.3 % (early stopping).</item>
    /// <item>A student sized to stay under 2 % of that teacher (hidden 48, 2 layers, feed-forward 96, at most 1,400 words of its
    /// own) that starts from the teacher's vocabulary and token embeddings, factored at rank 16 (3,629 pieces for the SST-2
    /// teacher: 103,187 parameters, 1.78 %; a whole 48-wide table would be 3.8 %). The rank-16 approximation of the teacher's
    /// embeddings carried as much sentiment as the whole (mean embedding + logistic regression: 65.8 vs 63.4 %).</item>
    /// <item>Two teacher-labelled variants per generated sample (a span and a word-dropped copy): the soft-prompt row gained
    /// on each of the five seeds (73.3 → 74.1 % on average).</item>
    /// <item>Early stopping after 3 epochs without a lower validation NLL (held-out generated rows and the few-shot dev rows),
    /// up to 30: at a fixed 30 epochs the student learned the store past its best.</item>
    /// <item>No retrieval loss, the epoch chosen on the head and the mix tuned once after training, so what retrieval adds is
    /// measured on the same model as the student without it (with the loss, the gain moved between machines from +1.5 to −0.9).</item>
    /// </list>
    /// </summary>
    public static RetriKTPipelineOptions EvaluatedRecipe() => new()
    {
        PromptTokens = 8, SupervisedEpochs = 10, RolloutsPerStep = 16, SamplesPerLabel = 4096, ExtractionBatchSize = 64, MaxAttemptsFactor = 3,
        StudentEpochs = 30, StudentHiddenSize = 48, StudentFeedForwardSize = 96, StudentMaxVocabulary = 1400, StudentMaxLength = 128, Seed = 1,
        StudentEmbeddingsFromTeacher = true, StudentEmbeddingRank = 16, StoreVariantsPerSample = 2,
        StudentEarlyStoppingPatience = 3, StudentRetrievalLossWeight = 0, StudentSelectEpochOnHead = true,
    };

    /// <summary>
    /// Throws naming the first setting the pipeline would refuse later: <see cref="ArgumentOutOfRangeException"/> for a
    /// setting out of range, <see cref="ArgumentException"/> for settings that contradict each other and
    /// <see cref="FileNotFoundException"/> for a corpus path that is not there. <see cref="RetriKTPipeline"/> calls it when
    /// it is built. The prompt tuning's, the extraction's and the student's settings are checked here as their own
    /// components check them, because those are built only after the steps before them: the student after the store is
    /// extracted, which takes hours on a CPU. Cheap: it reads no corpus and loads no model.
    /// </summary>
    public void Validate()
    {
        // No parameter name: the message names the setting, and hosts print it as it is.
        static void Check(bool ok, string message) { if (!ok) throw new ArgumentOutOfRangeException(paramName: null, message); }
        static string Text(double? value) => value is double v ? v.ToString(CultureInfo.InvariantCulture) : "null";
        Check(SamplesPerLabel >= 1, $"SamplesPerLabel must be >= 1, found {SamplesPerLabel}.");
        Check(PpoSteps >= 0, $"PpoSteps must be >= 0, found {PpoSteps}.");
        Check(StudentEpochs >= 1, $"StudentEpochs must be >= 1, found {StudentEpochs}.");
        Check(StudentEarlyStoppingPatience >= 0, $"StudentEarlyStoppingPatience must be >= 0, found {StudentEarlyStoppingPatience}.");
        // Written so that NaN fails.
        Check(StoreValidationShare is >= 0 and < 1, $"StoreValidationShare must be in [0, 1), found {Text(StoreValidationShare)}.");
        Check(FewShotDevTuningShare is null or (> 0 and <= 1), $"FewShotDevTuningShare must be in (0, 1] (or null for {Text(DefaultFewShotDevTuningShare)}), found {Text(FewShotDevTuningShare)}.");
        Check(FewShotDevMixShare is null or (> 0 and <= 1), $"FewShotDevMixShare must be in (0, 1] (or null for FewShotDevTuningShare's), found {Text(FewShotDevMixShare)}.");
        Check(StoreVariantsPerSample >= 0, $"StoreVariantsPerSample must be >= 0, found {StoreVariantsPerSample}.");
        // The corpus draws refuse these too, but only once they run: after extraction, or after the student trained.
        Check(StoreCorpusRows >= 1, $"StoreCorpusRows must be >= 1, found {StoreCorpusRows}.");
        Check(StoreCorpusTuningRows >= 1, $"StoreCorpusTuningRows must be >= 1, found {StoreCorpusTuningRows}.");
        Check(TuningCorpusRows is null or >= 1, $"TuningCorpusRows must be >= 1 (or null for {DefaultTuningCorpusRows}), found {TuningCorpusRows}.");
        // The prompt tuning's and the extraction's own checks (their messages name their own fields).
        Checked("Prompt settings: ", () => SoftPromptOptions().ValidateSettings());
        Checked("Extraction settings: ", () => ExtractorOptions().ValidateSettings());
        if (TuningCorpus is not null) CorpusSentences.RequireExists(TuningCorpus, CorpusSentences.TuningOption);
        if (StoreCorpus is not null) CorpusSentences.RequireExists(StoreCorpus, CorpusSentences.StoreOption);
        CheckTuningCorpusRule();
        var student = StudentTrainerOptions();
        if (StudentBackbone is null)
        {
            // The three shape settings a user most often gets wrong, in this class's names; the trainer checks them too.
            Check(StudentHiddenSize >= student.Heads && StudentHiddenSize % student.Heads == 0,
                $"StudentHiddenSize must be a positive multiple of the student's {student.Heads} attention heads, found {StudentHiddenSize}.");
            Check(StudentEmbeddingRank <= StudentHiddenSize, $"StudentEmbeddingRank ({StudentEmbeddingRank}) must be at most StudentHiddenSize ({StudentHiddenSize}).");
            int smallest = WordPieceVocabulary.MinimumBuildSize;
            Check(StudentMaxVocabulary >= smallest,
                $"StudentMaxVocabulary must be at least {smallest} (the {WordPieceVocabulary.SpecialTokens.Count} special tokens and 2 pieces), found {StudentMaxVocabulary}.");
        }
        // The rest of the student's settings, as its trainer checks them (its messages name its own fields).
        Checked("Student settings: ", () => _ = new RetrievalClassifierTrainer(new MLContext(), student));
    }

    /// <summary>Runs a component's own check; an out-of-range setting is rethrown with <paramref name="prefix"/> and without the parameter name.</summary>
    private static void Checked(string prefix, Action check)
    {
        try { check(); }
        catch (ArgumentOutOfRangeException e)
        {
            throw new ArgumentOutOfRangeException(paramName: null, prefix + e.Message.Replace($" (Parameter '{e.ParamName}')", ""));
        }
    }

    /// <summary>
    /// <see cref="TuningCorpus"/>'s sentences join the held-out store rows the store student is tuned on, so they need
    /// <see cref="StoreValidationShare"/> &gt; 0 and <see cref="TuneOnFewShotDev"/>.
    /// </summary>
    internal void CheckTuningCorpusRule()
    {
        if (TuningCorpus is not null && !(StoreValidationShare > 0 && TuneOnFewShotDev))
            throw new ArgumentException($"TuningCorpus '{TuningCorpus}' joins the teacher-labelled tuning rows, which need StoreValidationShare > 0 and " +
                                        string.Create(CultureInfo.InvariantCulture, $"TuneOnFewShotDev; found StoreValidationShare {StoreValidationShare} and TuneOnFewShotDev {TuneOnFewShotDev}."));
    }

    /// <summary>
    /// The prompt trainer's settings that these options fix on their own. The pipeline adds what depends on the task and
    /// the teacher: the template, the labels, the teacher and its path, progress and cancellation.
    /// </summary>
    internal SoftPromptPpoOptions SoftPromptOptions() => new()
    {
        PromptTokens = PromptTokens, SupervisedEpochs = SupervisedEpochs, PpoSteps = PpoSteps, RolloutsPerStep = RolloutsPerStep,
        MaxNewTokens = MaxNewTokens, CalibrateVerbalizer = CalibrateVerbalizer, Seed = Seed, MetricsCsvPath = PpoMetricsCsvPath,
        PpoLearningRate = PpoLearningRate ?? SoftPromptPpoOptions.Defaults.PpoLearningRate,
        MaxUpdateKl = ResolvedMaxUpdateKl(),
    };

    /// <summary>The trust region these options ask for: null (unset) takes the library's default, 0 turns it off.</summary>
    internal double? ResolvedMaxUpdateKl() =>
        PpoMaxUpdateKl switch { null => SoftPromptPpoOptions.Defaults.MaxUpdateKl, 0 => null, double kl => kl };

    /// <summary>
    /// The extractor's settings that these options fix on their own. The pipeline adds what depends on the run: the soft
    /// prompts, the checkpoint path (named after the task and the prompts), progress and cancellation.
    /// </summary>
    internal KnowledgeExtractorOptions ExtractorOptions() => new()
    {
        SamplesPerLabel = SamplesPerLabel, MaxAttemptsFactor = MaxAttemptsFactor, BatchSize = ExtractionBatchSize,
        FidelityThreshold = FidelityThreshold, RequireArgmax = RequireArgmax, AssignToTeacherLabel = AssignToTeacherLabel, IncludeFewShot = true,
        DropUnfinished = DropUnfinishedSamples ?? false,
        CalibrateVerbalizer = CalibrateVerbalizer, Seed = Seed,
        // By default the work directory is a cache: a checkpoint of other prompts (retrained after a recipe change) is moved aside and regenerated.
        StartFreshOnCheckpointMismatch = ReplaceMismatchedCheckpoint,
    };

    /// <summary>
    /// The student trainer's settings that these options fix on their own (shape, training, backbone). The pipeline adds
    /// what depends on the task and the store: the data, the validation rows, the vocabulary, the mix rule, progress.
    /// </summary>
    internal RetrievalClassifierTrainer.Options StudentTrainerOptions()
    {
        var student = new RetrievalClassifierTrainer.Options
        {
            EmbeddingRank = StudentEmbeddingRank, Epochs = StudentEpochs, SelectEpochOnHead = StudentSelectEpochOnHead,
            HiddenSize = StudentHiddenSize, Layers = StudentLayers, MaxLength = StudentMaxLength,
            NeighborCount = StudentNeighborCount, FeedForwardSize = StudentFeedForwardSize > 0 ? StudentFeedForwardSize : 4 * StudentHiddenSize,
            MaxVocabularySize = StudentMaxVocabulary, CharacterPieces = StudentCharacterPieces, TokenDropout = StudentTokenDropout,
            RetrievalLossWeight = StudentRetrievalLossWeight, SaveStoreTexts = StudentSaveStoreTexts, NeighborsColumnName = StudentNeighborsColumnName, Seed = Seed,
            Backbone = StudentBackbone, TrainableBackboneLayers = StudentTrainableBackboneLayers,
        };
        if (StudentBackboneLearningRate is double rate) student.BackboneLearningRate = rate; // unset: the trainer's default
        return student;
    }

    /// <summary>A copy to vary one setting without touching the original.</summary>
    public RetriKTPipelineOptions Clone() => (RetriKTPipelineOptions)MemberwiseClone();
}
