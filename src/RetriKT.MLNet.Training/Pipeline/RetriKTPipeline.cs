using System.Globalization;
using System.Diagnostics;
using Microsoft.ML;
using Microsoft.ML.Data;
using RetriKT.MLNet.Common;
using RetriKT.MLNet.Knowledge;
using RetriKT.MLNet.Knowledge.Extraction;
using RetriKT.MLNet.SoftPrompt;
using RetriKT.MLNet.Student;
using RetriKT.MLNet.Teacher;
using RetriKT.MLNet.Text;

namespace RetriKT.MLNet.Pipeline;

/// <summary>
/// Runs RetriKT end to end for one <see cref="FewShotTask"/> with a given teacher: soft prompts tuned on the few-shot
/// training split (stage 1, then PPO when <see cref="RetriKTPipelineOptions.PpoSteps"/> &gt; 0) →
/// <see cref="KnowledgeExtractor"/> → a <see cref="RetrievalClassifierTrainer">RetrievalClassifier</see> trained on
/// the store plus the few-shot gold examples (its epoch and mix λ, μ, τ chosen on the few-shot dev split and held-out
/// store rows) → ML.NET's multiclass evaluator
/// on the test split. The test split is never used for any choice. The same class also scores the reference rows a
/// low-resource table needs (<see cref="EvaluateFewShotStudent"/>, <see cref="EvaluateTeacher"/>,
/// <see cref="EvaluateMajority"/>), so every row is measured the same way.
/// </summary>
/// <example>
/// <code>
/// using var teacher = TeacherModel.Load("models/my-llama");
/// // EvaluatedRecipe: the measured settings for a real teacher and task (the options' field defaults are sized for the
/// // Quickstart's embedded task: 64 samples per label, where SST-2's student needed thousands; docs/PIPELINE.md)
/// var pipeline = new RetriKTPipeline(new MLContext(seed: 1), teacher, "models/my-llama", RetriKTPipelineOptions.EvaluatedRecipe());
/// RetriKTPipelineResult result = pipeline.Run(task);   // a FewShotTask: few-shot train and dev splits, a test split, labels, template
/// Console.WriteLine($"{result.Test.Accuracy:P1} with {result.ParameterRatio:P2} of the teacher's parameters");
/// </code>
/// </example>
public sealed class RetriKTPipeline
{
    private readonly MLContext _mlContext;
    private readonly TeacherModel _teacher;
    private readonly string _teacherPath;
    private readonly RetriKTPipelineOptions _options;

    /// <summary>Creates a runner for <paramref name="teacher"/>, which was loaded from <paramref name="teacherPath"/> (model.zip files reference it there).</summary>
    public RetriKTPipeline(MLContext mlContext, TeacherModel teacher, string teacherPath, RetriKTPipelineOptions? options = null)
    {
        _mlContext = mlContext ?? throw new ArgumentNullException(nameof(mlContext));
        _teacher = teacher ?? throw new ArgumentNullException(nameof(teacher));
        ArgumentException.ThrowIfNullOrWhiteSpace(teacherPath);
        _teacherPath = teacherPath;
        _options = options ?? new RetriKTPipelineOptions();
        _options.Validate();
        if (teacher.Tokenizer is null) throw new ArgumentException("The teacher has no tokenizer; the pipeline generates text with it.", nameof(teacher));
    }

    /// <summary>The options in use.</summary>
    public RetriKTPipelineOptions Options => _options;

    /// <summary>Runs the whole RetriKT chain on <paramref name="task"/> and scores the student on its test split.</summary>
    public RetriKTPipelineResult Run(FewShotTask task, IProgress<TrainingProgress>? progress = null, CancellationToken cancellation = default)
        => EvaluateStudentOnStore(task, ExtractStore(task, progress, cancellation), useRetrieval: true, progress, cancellation);

    /// <summary>
    /// RetriKT steps 1–3 on <paramref name="task"/>: soft prompts tuned on the few-shot training split (then PPO when
    /// <see cref="RetriKTPipelineOptions.PpoSteps"/> &gt; 0) and the knowledge store they extract from the teacher.
    /// The store is data: train several students on it (<see cref="EvaluateStudentOnStore"/>), save it, inspect it.
    /// </summary>
    public StoreExtraction ExtractStore(FewShotTask task, IProgress<TrainingProgress>? progress = null, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(task);
        CheckTask(task);
        var o = _options;
        // The teacher-facing stages see texts cut to the teacher's context; the student is scored on the untouched test split.
        var train = FewShotTask.ToDataView(_mlContext, FitToTeacher(task, task.Train));
        var clock = Stopwatch.StartNew();

        var promptOptions = o.SoftPromptOptions();
        (promptOptions.TeacherPath, promptOptions.Teacher, promptOptions.Template, promptOptions.Labels) = (_teacherPath, _teacher, task.Template, task.Labels);
        (promptOptions.Progress, promptOptions.CancellationToken) = (progress, cancellation);
        using var prompts = _mlContext.RetriKT().SoftPromptPpoTrainer(promptOptions).Fit(train);
        var promptTime = clock.Elapsed;

        clock.Restart();
        var checkpoint = ExtractionCheckpointPath(task);
        if (checkpoint is not null) Directory.CreateDirectory(o.WorkDirectory!);
        var extractorOptions = o.ExtractorOptions();
        (extractorOptions.SoftPrompts, extractorOptions.CheckpointPath) = (prompts, checkpoint);
        (extractorOptions.Progress, extractorOptions.CancellationToken) = (progress, cancellation);
        var extractor = _mlContext.RetriKT().KnowledgeExtractor(extractorOptions).Fit(train);
        return new StoreExtraction(extractor.Store, extractor.Report!, prompts.PromptParameterCount, prompts.TrainingReport, promptTime, clock.Elapsed);
    }

    /// <summary>
    /// The extraction checkpoint <see cref="ExtractStore"/> writes for <paramref name="task"/> in
    /// <see cref="RetriKTPipelineOptions.WorkDirectory"/> (null without one), whether or not it exists yet: for a caller that
    /// says what an interrupted run kept. The checkpoint is only valid for these exact prompts, so it is named after
    /// everything that shapes them.
    /// </summary>
    public string? ExtractionCheckpointPath(FewShotTask task)
    {
        ArgumentNullException.ThrowIfNull(task);
        var o = _options;
        return o.WorkDirectory is { } work
            ? Path.Combine(work, $"extraction-{task.Name}-{task.Seed?.ToString() ?? "na"}-ppo{o.PpoSteps}{PpoNamePart(o)}-s{o.Seed}-{_teacher.ContentHash[..12]}.jsonl")
            : null;
    }

    /// <summary>
    /// RetriKT step 4 on a store from <see cref="ExtractStore"/>: the student trained on the store plus the few-shot
    /// gold rows and scored on the test split. <paramref name="useRetrieval"/> false trains the very same student on the
    /// very same store with no retrieval loss and predicts from its head alone (λ = 0): the row that tells "the store's
    /// data helped" apart from "retrieval helped".
    /// </summary>
    public RetriKTPipelineResult EvaluateStudentOnStore(FewShotTask task, StoreExtraction extraction, bool useRetrieval,
        IProgress<TrainingProgress>? progress = null, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(extraction);
        using var trained = TrainStudent(task, extraction, useRetrieval, progress, cancellation);
        return Describe(task, extraction, trained);
    }

    /// <summary>
    /// The result record of a student from <see cref="TrainStudent"/> on <paramref name="extraction"/>'s store: what
    /// <see cref="EvaluateStudentOnStore"/> returns, for a caller that keeps the student to look further at it.
    /// </summary>
    public RetriKTPipelineResult Describe(FewShotTask task, StoreExtraction extraction, TrainedStudent trained)
    {
        ArgumentNullException.ThrowIfNull(task); ArgumentNullException.ThrowIfNull(extraction); ArgumentNullException.ThrowIfNull(trained);
        var student = trained.Student;
        return new RetriKTPipelineResult(task.Name, task.Seed, trained.Test, trained.FewShotDevAccuracy, _teacher.ParameterCount, student.ParameterCount,
            extraction.PromptParameters, extraction.Store.Count, student.RetrievalWeight, student.LexicalRetrievalWeight, extraction.Report, extraction.SoftPromptReport,
            new PipelineTimings(extraction.SoftPromptTime, extraction.ExtractionTime, trained.TrainTime, trained.EvaluationTime));
    }

    /// <summary>
    /// RetriKT step 4, keeping the student: trained on <paramref name="extraction"/>'s store plus the few-shot gold rows
    /// (null: on the few-shot rows alone, the "few-shot only" reference), its epoch and mix chosen as in <see cref="Run"/>, and scored
    /// on the test split. <see cref="EvaluateStudentOnStore"/> and <see cref="EvaluateFewShotStudent"/> train through
    /// here; this one hands the student back (the caller disposes it) to be saved, served or explained.
    /// </summary>
    public TrainedStudent TrainStudent(FewShotTask task, StoreExtraction? extraction, bool useRetrieval = true,
        IProgress<TrainingProgress>? progress = null, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(task);
        CheckTask(task);
        return TrainAndEvaluateStudent(task, extraction?.Store, progress, cancellation, useRetrieval);
    }

    /// <summary>
    /// Scores any model that maps Text (and Text2) to a key PredictedLabel over the task's labels on the task's test
    /// split, the way every pipeline row is scored (ML.NET's multiclass evaluator): for variants of a trained student
    /// such as its head alone (<c>student.WithRetrievalWeight(0)</c>). A model whose PredictedLabel names its keys must
    /// name the task's labels in the task's order.
    /// </summary>
    public ClassificationScores Score(FewShotTask task, ITransformer model)
    {
        ArgumentNullException.ThrowIfNull(task); ArgumentNullException.ThrowIfNull(model);
        CheckTask(task);
        var keyMap = KeyMap(task);
        var scored = model.Transform(keyMap.Transform(FewShotTask.ToDataView(_mlContext, task.Test)));
        // The evaluator compares key i with key i: a model whose key i is another label than the task's label i (its labels
        // in another order) would be scored on swapped labels without a word. A model that names no keys is taken as it is.
        if (scored.Schema.GetColumnOrNull("PredictedLabel") is { } predicted && LabelColumn.AnnotatedKeyNames(predicted) is { } names
            && !names.SequenceEqual(task.Labels, StringComparer.Ordinal))
            throw new ArgumentException($"Task '{task.Name}': the model predicts the labels [{string.Join(", ", names)}] and the task has [{string.Join(", ", task.Labels)}] " +
                                        "(in score order); scored as they are, its predictions would be read as other labels.");
        return FromMetrics(_mlContext.MulticlassClassification.Evaluate(scored), task);
    }

    /// <summary>
    /// The "fine-tuned on the few-shot set alone" reference: the same student trained only on the gold few-shot
    /// examples (its store holds just those), its epoch and mix chosen on the few-shot dev split, scored on the test split.
    /// Returns the test metrics and the student's parameter count.
    /// </summary>
    public (ClassificationScores Test, long StudentParameters) EvaluateFewShotStudent(FewShotTask task, IProgress<TrainingProgress>? progress = null,
        CancellationToken cancellation = default)
    {
        using var trained = TrainStudent(task, extraction: null, useRetrieval: true, progress, cancellation);
        return (trained.Test, trained.Student.ParameterCount);
    }

    /// <summary>
    /// The teacher as a prompted classifier (<see cref="VerbalizerClassifier"/> on the task template). Whether to
    /// calibrate is chosen on the few-shot dev split (ties keep calibration); the test split is only scored.
    /// <paramref name="progress"/> follows stage <see cref="TeacherEvaluationStage"/>: rows scored of the dev split twice
    /// (with and without calibration) and the test split once, after each teacher forward pass; the pass after a
    /// cancellation of <paramref name="cancellation"/> (or of the MLContext) is not run. Neither changes a prediction.
    /// </summary>
    public (ClassificationScores Test, bool Calibrated) EvaluateTeacher(FewShotTask task, IProgress<TrainingProgress>? progress = null,
        CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(task);
        CheckTask(task);
        var labelIndex = LabelIndex(task);
        var dev = FitToTeacher(task, task.Dev);
        var test = FitToTeacher(task, task.Test);
        // One count over the three scans, so a progress bar fills once: on a CPU the test split alone takes minutes.
        var host = new ComponentHost(_mlContext, nameof(EvaluateTeacher), _options.Seed, progress, cancellation);
        int total = 2 * dev.Count + test.Count, scanned = 0;
        int[] Predict(VerbalizerClassifier c, List<TextPairRow> rows)
        {
            host.CheckAlive();
            int before = scanned;
            var predicted = c.Predict(rows.Select(Sample).ToList(), (done, _) => host.Report(TeacherEvaluationStage, before + done, total), cancellation);
            scanned = before + rows.Count;
            return predicted;
        }
        double DevAccuracy(VerbalizerClassifier c)
        {
            var predicted = Predict(c, dev);
            return dev.Select((r, i) => predicted[i] == labelIndex[r.Label] ? 1.0 : 0.0).Average();
        }
        var calibrated = new VerbalizerClassifier(_teacher, task.Template, task.Labels, calibrate: true);
        var raw = new VerbalizerClassifier(_teacher, task.Template, task.Labels, calibrate: false);
        var chosen = dev.Count == 0 || DevAccuracy(calibrated) >= DevAccuracy(raw) ? calibrated : raw;
        var predictions = Predict(chosen, test);
        return (ClassificationScores.FromPredictions(test.Select(r => labelIndex[r.Label]).ToList(), predictions, task.Labels.Count), chosen.Calibrated);
    }

    /// <summary>The <see cref="TrainingProgress.Stage"/> of <see cref="EvaluateTeacher"/>'s progress reports.</summary>
    public const string TeacherEvaluationStage = "Teacher evaluation";

    /// <summary>The majority-class reference: predicts the most frequent test label for every row (as LM-BFF reports it).</summary>
    public static ClassificationScores EvaluateMajority(FewShotTask task)
    {
        ArgumentNullException.ThrowIfNull(task);
        CheckTask(task);
        var labelIndex = LabelIndex(task);
        var gold = task.Test.Select(r => labelIndex[r.Label]).ToList();
        int majority = MajorityLabel(gold);
        return ClassificationScores.FromPredictions(gold, Enumerable.Repeat(majority, gold.Count).ToList(), task.Labels.Count);
    }

    /// <summary>The most frequent label index (the lowest index on a tie).</summary>
    private static int MajorityLabel(IEnumerable<int> gold) => gold.GroupBy(g => g).OrderByDescending(g => g.Count()).ThenBy(g => g.Key).First().Key;

    /// <summary>
    /// Every split gets the same label → key map, in the task's label order, which is also the store's order: key i
    /// is score slot i - 1, as ML.NET's evaluator expects.
    /// </summary>
    private ITransformer KeyMap(FewShotTask task)
    {
        var keyData = _mlContext.Data.LoadFromEnumerable(task.Labels.Select(l => new LabelValue { Label = l }));
        return _mlContext.Transforms.Conversion.MapValueToKey("Label", keyData: keyData).Fit(FewShotTask.ToDataView(_mlContext, task.Train));
    }

    /// <summary>
    /// Warns when a student trained on a store does no better on the gold few-shot dev rows than always answering their
    /// most frequent label: the store taught it something other than the task (on CB and BoolQ, stand-in teachers that
    /// never saw the task gave stores whose students scored 8.9 % and 43.3 % against majority classes of 50 % and 62 %).
    /// The extractor's per-label warning names the usual cause; this one also catches any other, at the point where a
    /// user would otherwise ship the student.
    /// </summary>
    private void WarnWhereTheStoreStudentLosesToTheMajority(FewShotTask task, double devAccuracy, IProgress<TrainingProgress>? progress, CancellationToken cancellation)
    {
        var labelIndex = LabelIndex(task);
        var gold = task.Dev.Select(r => labelIndex[r.Label]).ToList();
        if (gold.Count == 0 || double.IsNaN(devAccuracy)) return;
        int majority = MajorityLabel(gold);
        double share = (double)gold.Count(g => g == majority) / gold.Count;
        if (devAccuracy > share) return;
        new ComponentHost(_mlContext, nameof(RetriKTPipeline), _options.Seed, progress, cancellation).Warning(string.Create(CultureInfo.InvariantCulture,
            $"The student trained on the store scores {devAccuracy:P1} on the {gold.Count} gold few-shot dev rows of {task.Name}, no better than always answering '{task.Labels[majority]}' ({share:P1}). ")
            + "The store teaches something other than the task: check the extraction's warnings and the teacher's accuracy on labelled rows before using this student.");
    }

    private TrainedStudent TrainAndEvaluateStudent(FewShotTask task, KnowledgeStore? store, IProgress<TrainingProgress>? progress, CancellationToken cancellation,
        bool useRetrieval)
    {
        var o = _options;
        var keyMap = KeyMap(task);
        var train = keyMap.Transform(FewShotTask.ToDataView(_mlContext, task.Train));
        var dev = task.Dev.Count > 0 ? keyMap.Transform(FewShotTask.ToDataView(_mlContext, task.Dev)) : null;
        var test = keyMap.Transform(FewShotTask.ToDataView(_mlContext, task.Test));
        var validation = dev;
        string? validationWeights = null, mixWeights = null;
        // Validate checked it when the pipeline was built; the options may have changed since (Options is the caller's object).
        if (store is not null) o.CheckTuningCorpusRule();
        // Before the hold-out, so the epoch and the mix are chosen on real sentences as well as generated ones. A student
        // without a store (the few-shot reference) stays without one.
        int corpusEntries = 0;
        bool corpusAfterTraining = o.StoreCorpusAfterTraining && o.StoreCorpus is not null && store is not null;
        if (corpusAfterTraining && !useRetrieval)
            throw new ArgumentException($"StoreCorpusAfterTraining adds '{o.StoreCorpus}' to the store through retrieval; a student without retrieval cannot use it. Leave it unset for this student.");
        if (o.StoreCorpus is not null && store is not null && !corpusAfterTraining)
        {
            int before = store.Count;
            store = WithStoreCorpus(task, store, progress, cancellation);
            corpusEntries = store.Count - before;
        }
        // Held out only to be tuned on: without TuneOnFewShotDev nothing is tuned on them, and they would only have left
        // the student's store.
        if (store is not null && o.StoreValidationShare > 0 && o.TuneOnFewShotDev)
        {
            var (kept, heldOut) = HoldOut(store, o.StoreValidationShare, o.Seed);
            store = kept;
            if (o.TuningCorpus is not null) heldOut.AddRange(TeacherLabelledCorpusRows(task, progress, cancellation));
            if (heldOut.Count > 0)
            {
                // The held-out rows are generated text, like the store their neighbours come from; the few-shot dev rows
                // are real inputs. Counted row by row, ~800 generated rows outvote 32 real ones and pick the mix that
                // suits generated text (on SST-2 seed 13: term matching at μ = 0.5 where real text wanted more), so each
                // group gets a share of the weight (FewShotDevTuningShare; 1: the real rows alone).
                double share = o.FewShotDevTuningShare ?? RetriKTPipelineOptions.DefaultFewShotDevTuningShare;
                double mixShare = o.FewShotDevMixShare ?? share;
                if (!(share is > 0 and <= 1))
                    throw new ArgumentOutOfRangeException(nameof(o.FewShotDevTuningShare), $"FewShotDevTuningShare must be in (0, 1], found {share}.");
                if (!(mixShare is > 0 and <= 1))
                    throw new ArgumentOutOfRangeException(nameof(o.FewShotDevMixShare), $"FewShotDevMixShare must be in (0, 1], found {mixShare}.");
                (float Dev, float HeldOut) Weights(double devShare) =>
                    (task.Dev.Count == 0 ? 0 : devShare >= 1 ? 1 : (float)(devShare / (1 - devShare) * heldOut.Count / task.Dev.Count),
                     devShare >= 1 && task.Dev.Count > 0 ? 0 : 1);
                var (forEpoch, forMix) = (Weights(share), Weights(mixShare));
                var rows = task.Dev.Select(r => new WeightedRow(r, forEpoch.Dev, forMix.Dev)).Concat(heldOut.Select(r => new WeightedRow(r, forEpoch.HeldOut, forMix.HeldOut))).ToList();
                validation = keyMap.Transform(_mlContext.Data.LoadFromEnumerable(rows));
                validationWeights = nameof(WeightedRow.Weight);
                if (o.FewShotDevMixShare is not null) mixWeights = nameof(WeightedRow.MixWeight);
            }
        }

        int variants = 0;
        if (store is not null && o.StoreVariantsPerSample > 0)
        {
            // After the hold-out: a held-out row's spans in the training store would let the mix be tuned on what the student saw.
            var scorer = new VerbalizerClassifier(_teacher, task.Template, task.Labels, o.CalibrateVerbalizer);
            int before = store.Count;
            var host = new ComponentHost(_mlContext, nameof(StoreVariants), o.Seed, progress, cancellation);
            store = StoreVariants.Add(store, scorer, new StoreVariantOptions { PerSample = o.StoreVariantsPerSample, Seed = o.Seed },
                host.Info, (done, total) => host.Report("Store variants", done, total), cancellation);
            variants = store.Count - before;
        }

        var teacherVocabulary = o.StudentEmbeddingsFromTeacher
            ? TeacherTokenVocabulary.Export(_teacher, Path.Combine(o.WorkDirectory ?? Path.GetTempPath(), $"student-vocabulary-{_teacher.ContentHash[..16]}"))
            : null;
        var clock = Stopwatch.StartNew();
        RetrievalClassifierTrainer Trainer(MixSelection mixSelection)
        {
            var options = o.StudentTrainerOptions();
            (options.VocabularyPath, options.TokenEmbeddingsPath) = (teacherVocabulary?.VocabularyPath, teacherVocabulary?.EmbeddingsPath);
            options.MixSelection = mixSelection;
            options.SecondTextColumnName = task.IsPair ? nameof(TextPairRow.Text2) : null;
            // The store reaches the trainer as data, the way a saved or filtered store would.
            // The pipeline holds out its own rows (above), so the trainer holds out none of its own.
            (options.StoreData, options.ValidationSet, options.StoreValidationShare) = (store?.ToDataView(_mlContext), o.TuneOnFewShotDev ? validation : null, 0);
            (options.ValidationWeightColumnName, options.MixWeightColumnName, options.UseRetrieval) = (validationWeights, mixWeights, useRetrieval);
            options.EarlyStoppingPatience = validationWeights is not null && o.StudentBackbone is null ? o.StudentEarlyStoppingPatience : 0;
            options.TeacherParameterCount = _teacher.ParameterCount;
            (options.Progress, options.CancellationToken) = (progress, cancellation);
            return _mlContext.MulticlassClassification.Trainers.RetrievalClassifier(options);
        }
        var trainer = Trainer(o.StudentMixSelection);
        var student = trainer.Fit(train);
        var trainTime = clock.Elapsed;
        try
        {
            if (corpusAfterTraining)
            {
                var trained = student;
                var rule = o.StoreCorpusMixSelection ?? RetriKTPipelineOptions.DefaultStoreCorpusMixSelection;
                (student, corpusEntries) = GrownWithStoreCorpus(task, rule == o.StudentMixSelection ? trainer : Trainer(rule),
                    trained, keyMap, progress, cancellation);
                trained.Dispose();
            }
            clock.Restart();
            var metrics = _mlContext.MulticlassClassification.Evaluate(student.Transform(test));
            var scores = FromMetrics(metrics, task);
            var evalTime = clock.Elapsed;
            double devAccuracy = dev is null ? double.NaN : _mlContext.MulticlassClassification.Evaluate(student.Transform(dev)).MicroAccuracy;
            if (store is not null) WarnWhereTheStoreStudentLosesToTheMajority(task, devAccuracy, progress, cancellation);
            return new TrainedStudent(student, scores, devAccuracy, trainTime, evalTime) { StoreVariants = variants, StoreCorpusEntries = corpusEntries };
        }
        catch
        {
            student.Dispose();
            throw;
        }
    }

    /// <summary>
    /// <see cref="RetriKTPipelineOptions.TuningCorpusRows"/> real sentences of <see cref="RetriKTPipelineOptions.TuningCorpus"/>,
    /// each labelled with the teacher's most probable label (the verbalizer the store's soft labels come from), as tuning rows.
    /// </summary>
    internal List<TextPairRow> TeacherLabelledCorpusRows(FewShotTask task, IProgress<TrainingProgress>? progress, CancellationToken cancellation)
    {
        var o = _options;
        RequireSingleText(task, CorpusSentences.TuningOption, o.TuningCorpus!);
        var clock = Stopwatch.StartNew();
        var sentences = CorpusForTeacher(task, o.TuningCorpus!, o.TuningCorpusRows ?? RetriKTPipelineOptions.DefaultTuningCorpusRows, CorpusSentences.TuningOption);
        var scorer = new VerbalizerClassifier(_teacher, task.Template, task.Labels, o.CalibrateVerbalizer);
        var host = new ComponentHost(_mlContext, "TuningCorpus", o.Seed, progress, cancellation);
        var labelled = UnlabeledText.Add(new KnowledgeStore(task.Labels, []), sentences, scorer,
            progress: (done, total) => host.Report("Tuning corpus", done, total), cancellation: cancellation, scoringChunk: 256);
        var rows = labelled.Entries.Select(e => new TextPairRow { Text = e.Text!, Label = task.Labels[e.Label] }).ToList();
        var counts = task.Labels.Select(l => $"{l}: {rows.Count(r => r.Label == l)}");
        host.Info($"Tuning corpus: {rows.Count} sentences of '{o.TuningCorpus}' labelled by the teacher ({string.Join(", ", counts)}) in {clock.Elapsed.TotalSeconds:F0} s.");
        return rows;
    }

    /// <summary>
    /// <paramref name="store"/> plus <see cref="RetriKTPipelineOptions.StoreCorpusRows"/>
    /// sentences of <see cref="RetriKTPipelineOptions.StoreCorpus"/>, soft-labelled by the teacher (<see cref="UnlabeledText"/>).
    /// </summary>
    private KnowledgeStore WithStoreCorpus(FewShotTask task, KnowledgeStore store, IProgress<TrainingProgress>? progress, CancellationToken cancellation)
    {
        var o = _options;
        RequireSingleText(task, CorpusSentences.StoreOption, o.StoreCorpus!);
        if (o.TuningCorpus is not null && SamePath(o.TuningCorpus, o.StoreCorpus!))
            throw new ArgumentException($"StoreCorpus and TuningCorpus are the same text '{o.StoreCorpus}'; a tuning row could then be a store entry the student trained on. Give the tuning rows other text.");
        var sentences = CorpusForTeacher(task, o.StoreCorpus!, o.StoreCorpusRows, CorpusSentences.StoreOption);
        var host = new ComponentHost(_mlContext, "StoreCorpus", o.Seed, progress, cancellation);
        return UnlabeledText.Add(store, sentences,
            new VerbalizerClassifier(_teacher, task.Template, task.Labels, o.CalibrateVerbalizer),
            host.Info, (done, total) => host.Report("Store corpus", done, total), cancellation);
    }

    /// <summary>
    /// <see cref="RetriKTPipelineOptions.StoreCorpusAfterTraining"/>: <see cref="RetriKTPipelineOptions.StoreCorpusRows"/>
    /// sentences join the trained student's store and <see cref="RetriKTPipelineOptions.StoreCorpusTuningRows"/> others,
    /// from other documents (<see cref="CorpusSentences.DrawWithTuningDocuments"/>), choose its mix again; all labelled by
    /// the teacher. Returns the grown student and the entries added.
    /// </summary>
    private (RetrievalClassifierTransformer Student, int Added) GrownWithStoreCorpus(FewShotTask task, RetrievalClassifierTrainer trainer,
        RetrievalClassifierTransformer student, ITransformer keyMap, IProgress<TrainingProgress>? progress, CancellationToken cancellation)
    {
        var o = _options;
        RequireSingleText(task, CorpusSentences.StoreOption, o.StoreCorpus!);
        var (forStore, forTuning) = CorpusSentences.DrawWithTuningDocuments(o.StoreCorpus!, o.StoreCorpusRows, o.StoreCorpusTuningRows, o.Seed);
        CorpusSentences.RequireApartFromTest([.. forStore, .. forTuning], task.Test.Select(r => r.Text), task.Name, o.StoreCorpus!, CorpusSentences.StoreOption);
        var host = new ComponentHost(_mlContext, "StoreCorpus", o.Seed, progress, cancellation);
        // In the student's label order (its Label keys'), which WithAddedKnowledge requires.
        var scorer = new VerbalizerClassifier(_teacher, task.Template, student.LabelNames, o.CalibrateVerbalizer);
        var added = UnlabeledText.Add(new KnowledgeStore(student.LabelNames, []), FittedToTeacher(task, forStore), scorer,
            host.Info, (done, total) => host.Report("Store corpus", done, total), cancellation);
        var tuning = UnlabeledText.Add(new KnowledgeStore(student.LabelNames, []), FittedToTeacher(task, forTuning), scorer,
            host.Info, (done, total) => host.Report("Store corpus tuning rows", done, total), cancellation);
        using var grown = student.WithAddedKnowledge(added, cancellation);
        // Weighted rows: the trainer's options may name the validation weight columns (each row counts once here).
        var rows = tuning.Entries.Select(e => new WeightedRow(new TextPairRow { Text = e.Text!, Label = student.LabelNames[e.Label] }, 1, 1)).ToList();
        var tuned = trainer.TuneMix(grown, keyMap.Transform(_mlContext.Data.LoadFromEnumerable(rows)));
        host.Info(string.Create(CultureInfo.InvariantCulture, $"Store corpus after training: {added.Count} sentences added to the trained student's store, " +
            $"the mix chosen again on {rows.Count} others: λ {student.RetrievalWeight:G3} → {tuned.RetrievalWeight:G3}, μ {student.LexicalRetrievalWeight:G3} → {tuned.LexicalRetrievalWeight:G3}."));
        return (tuned, added.Count);
    }

    /// <summary>A corpus option gives single sentences: a pair task is refused with one line naming the option.</summary>
    private static void RequireSingleText(FewShotTask task, string option, string path)
    {
        if (task.IsPair)
            throw new ArgumentException($"{option} '{path}' gives single sentences; task {task.Name} takes sentence pairs. Leave {option} unset for it.");
    }

    /// <summary>
    /// <paramref name="count"/> sentences of a corpus option (<see cref="CorpusSentences.Draw"/>), none of them a test
    /// sentence of <paramref name="task"/> (<see cref="CorpusSentences.RequireApartFromTest"/>), each fitted to the
    /// teacher's context: a sentence longer than it loses its last words, as the few-shot rows do.
    /// </summary>
    private List<(string Text, string? Text2)> CorpusForTeacher(FewShotTask task, string path, int count, string option)
    {
        var sentences = CorpusSentences.Draw(path, count, _options.Seed, option);
        CorpusSentences.RequireApartFromTest(sentences, task.Test.Select(r => r.Text), task.Name, path, option);
        return FittedToTeacher(task, sentences);
    }

    /// <summary>Corpus sentences as single-text rows, each fitted to the teacher's context (<see cref="FitToTeacher"/>).</summary>
    private List<(string Text, string? Text2)> FittedToTeacher(FewShotTask task, List<string> sentences) =>
        FitToTeacher(task, sentences.Select(t => new TextPairRow { Text = t }).ToList()).Select(r => (r.Text, (string?)null)).ToList();

    private static bool SamePath(string a, string b) =>
        Path.TrimEndingDirectorySeparator(Path.GetFullPath(a)) == Path.TrimEndingDirectorySeparator(Path.GetFullPath(b));

    /// <summary>
    /// <see cref="StoreHoldOut.Split"/>, with the held-out entries as rows labelled with the teacher's most probable label.
    /// </summary>
    internal static (KnowledgeStore Kept, List<TextPairRow> HeldOut) HoldOut(KnowledgeStore store, double share, int seed)
    {
        var (kept, heldOut) = StoreHoldOut.Split(store, share, seed);
        return (kept, heldOut.Select(h => new TextPairRow { Text = h.Entry.Text!, Text2 = h.Entry.Text2 ?? "", Label = store.LabelNames[h.TeacherLabel] }).ToList());
    }

    /// <summary>
    /// ML.NET's metrics of <paramref name="task"/>'s test split as scores. The evaluator skips rows without a label key
    /// (and a model may drop rows); every test row must have been scored, else the accuracy would be of part of the split.
    /// </summary>
    private static ClassificationScores FromMetrics(MulticlassClassificationMetrics metrics, FewShotTask task)
    {
        var counts = metrics.ConfusionMatrix.Counts;
        int k = counts.Count;
        var confusion = new double[k, k];
        for (int gold = 0; gold < k; gold++)
            for (int predicted = 0; predicted < counts[gold].Count; predicted++) confusion[gold, predicted] = counts[gold][predicted];
        var scores = ClassificationScores.FromConfusion(confusion);
        if (scores.Rows != task.Test.Count)
            throw new InvalidOperationException($"Task '{task.Name}': {scores.Rows} of the {task.Test.Count} test rows were scored; the model or the label map dropped the others.");
        // Accuracy exactly as ML.NET reports it (the confusion matrix gives the same value; this keeps one source of truth).
        return scores with { Accuracy = metrics.MicroAccuracy };
    }

    /// <summary>
    /// Rows whose first text is cut (whole words from its end) so that the classification prompt, the soft prompt and
    /// a generated sample fit the teacher's context: long premises and passages (CB, BoolQ) would otherwise exceed a
    /// small teacher's positions. Rows that fit are returned unchanged.
    /// </summary>
    private List<TextPairRow> FitToTeacher(FewShotTask task, IReadOnlyList<TextPairRow> rows)
    {
        var tokenizer = _teacher.Tokenizer!;
        var template = task.Template;
        string longestWord = template.Verbalizer.Values.OrderByDescending(w => tokenizer.Encode(w).Length).First();
        int reserve = _options.PromptTokens + (_options.MaxNewTokens ?? template.MaxNewTokens) + 8;
        int budget = _teacher.Config.MaxPositions - reserve;
        if (budget < 16) throw new InvalidOperationException(
            $"The teacher's context ({_teacher.Config.MaxPositions} positions) leaves {budget} for the task text after {reserve} for prompts and generation; use a teacher with a longer context or fewer PromptTokens/MaxNewTokens.");
        int Tokens(string text, string text2) => tokenizer.Encode(template.RenderClassification(text, text2, longestWord), addBos: true).Length;
        var result = new List<TextPairRow>(rows.Count);
        foreach (var row in rows)
        {
            int tokens = Tokens(row.Text, row.Text2);
            if (tokens <= budget) { result.Add(row); continue; }
            var words = row.Text.Split(' ', StringSplitOptions.RemoveEmptyEntries).ToList();
            while (tokens > budget && words.Count > 1)
            {
                // Drop about as many words as there are surplus tokens (a word is at least one token), then re-measure.
                int drop = Math.Clamp(tokens - budget, 1, words.Count - 1);
                words.RemoveRange(words.Count - drop, drop);
                tokens = Tokens(string.Join(' ', words), row.Text2);
            }
            result.Add(new TextPairRow { Text = string.Join(' ', words), Text2 = row.Text2, Label = row.Label });
        }
        return result;
    }

    /// <summary>
    /// The PPO settings in an extraction checkpoint's name beyond the step count: none at the library's rate (the names
    /// checkpoints had before these options), else the rate and the trust region ("off" when turned off).
    /// </summary>
    internal static string PpoNamePart(RetriKTPipelineOptions o)
    {
        string rollouts = o.RolloutsPerStep == new RetriKTPipelineOptions().RolloutsPerStep ? "" : FormattableString.Invariant($"-r{o.RolloutsPerStep}");
        if (o.PpoLearningRate is null && o.PpoMaxUpdateKl is null) return rollouts;
        double lr = o.PpoLearningRate ?? SoftPromptPpoOptions.Defaults.PpoLearningRate;
        string kl = o.ResolvedMaxUpdateKl() is double k ? FormattableString.Invariant($"{k:R}") : "off";
        return FormattableString.Invariant($"-lr{lr:R}-kl{kl}{rollouts}");
    }

    private static (string Text, string? Text2) Sample(TextPairRow row) => (row.Text, string.IsNullOrEmpty(row.Text2) ? null : row.Text2);

    private static Dictionary<string, int> LabelIndex(FewShotTask task)
        => task.Labels.Select((l, i) => (l, i)).ToDictionary(p => p.l, p => p.i, StringComparer.Ordinal);

    /// <summary>
    /// Refuses a task the pipeline cannot score faithfully: fewer than 2 labels or one listed twice, an empty training or
    /// test split, or a row of any split whose label is not one of the task's labels (a test row with another label would
    /// be left out of the accuracy without a word; a dev row, out of the model selection) or whose texts are not the ones
    /// its template reads (<see cref="CheckLabels"/>). Every entry point runs it before any work.
    /// The messages carry no parameter name: hosts print them as they are.
    /// </summary>
    private static void CheckTask(FewShotTask task)
    {
        if (task.Labels.Count < 2) throw new ArgumentException($"Task '{task.Name}' has {task.Labels.Count} label(s); at least 2 are needed.");
        // Label i is score slot i everywhere (key map, store, verbalizer): a label listed twice has no one slot.
        if (task.Labels.GroupBy(l => l, StringComparer.Ordinal).FirstOrDefault(g => g.Count() > 1) is { } twice)
            throw new ArgumentException($"Task '{task.Name}': label '{twice.Key}' is listed twice in [{string.Join(", ", task.Labels)}].");
        if (task.Train.Count == 0) throw new ArgumentException($"Task '{task.Name}' has an empty training split.");
        if (task.Test.Count == 0) throw new ArgumentException($"Task '{task.Name}' has an empty test split.");
        CheckLabels(task, "train", task.Train);
        CheckLabels(task, "dev", task.Dev);
        CheckLabels(task, "test", task.Test);
    }

    /// <summary>
    /// Every row of <paramref name="rows"/> (the task's <paramref name="split"/> split) has one of the task's labels and the
    /// texts its template reads: a text, and a second text exactly when the template reads pairs (a second text a one-text
    /// template never reads would be dropped without a word, a missing one scored as empty). Else one line naming the row, 1-based.
    /// </summary>
    internal static void CheckLabels(FewShotTask task, string split, IReadOnlyList<TextPairRow> rows)
    {
        var known = task.Labels.ToHashSet(StringComparer.Ordinal);
        for (int i = 0; i < rows.Count; i++)
        {
            var row = rows[i];
            string where = $"Task '{task.Name}': {split} row {i + 1}";
            if (!known.Contains(row.Label))
                throw new ArgumentException($"{where}: label '{row.Label}' is not one of [{string.Join(", ", task.Labels)}].");
            // The runtime's test for a text (TaskTemplate.MissingText's): a text of zero-width characters passed
            // IsNullOrWhiteSpace and encoded as an empty input.
            if (!TextTokenizingTransformer.HasWordCharacter(row.Text)) throw new ArgumentException($"{where}: the text {TaskTemplate.Emptiness(row.Text)}.");
            if (task.IsPair && !TextTokenizingTransformer.HasWordCharacter(row.Text2))
                throw new ArgumentException($"{where}: the second text {TaskTemplate.Emptiness(row.Text2)}; template '{task.Template.Name}' reads sentence pairs.");
            if (!task.IsPair && !string.IsNullOrEmpty(row.Text2))
                throw new ArgumentException($"{where}: a second text ('{(row.Text2.Length <= 40 ? row.Text2 : row.Text2[..37] + "...")}'), but template '{task.Template.Name}' reads one text; it would be ignored.");
        }
    }

    /// <summary>A validation row with its weights: in the choice of epoch (and of the mix, unless MixWeight is used), and in the λ/μ/τ tuning.</summary>
    private sealed class WeightedRow(TextPairRow row, float weight, float mixWeight)
    {
        public string Text { get; set; } = row.Text;
        public string Text2 { get; set; } = row.Text2;
        public string Label { get; set; } = row.Label;
        public float Weight { get; set; } = weight;
        public float MixWeight { get; set; } = mixWeight;
    }

    private sealed class LabelValue
    {
        public string Label { get; set; } = "";
    }
}
