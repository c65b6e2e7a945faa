using System.Diagnostics;
using System.Globalization;
using Microsoft.ML;
using Microsoft.ML.Data;
using RetriKT.MLNet;
using RetriKT.MLNet.Common;
using RetriKT.MLNet.Knowledge.Extraction;
using RetriKT.MLNet.Pipeline;
using RetriKT.MLNet.Student;
using RetriKT.MLNet.Teacher;
using RetriKT.Samples.Data;
using Spectre.Console;

namespace RetriKT.Quickstart;

/// <summary>Input row of the saved model (what a service sends).</summary>
public sealed class ReviewInput
{
    public string Text { get; set; } = "";
    public string Text2 { get; set; } = "";
}

/// <summary>Output row of the saved model.</summary>
public sealed class ReviewPrediction
{
    public string PredictedLabel { get; set; } = "";
    public float[] Score { get; set; } = [];
}

/// <summary>
/// The Quickstart's stages, each with a progress bar, then the results table. <paramref name="cancellation"/> (Ctrl-C,
/// SIGTERM) reaches every stage; a cancelled run ends in an <see cref="OperationCanceledException"/> whose message says
/// what was running and what is kept.
/// </summary>
public sealed class QuickstartRun(QuickstartOptions options, CancellationToken cancellation = default)
{
    /// <summary>Where an unexpected failure's details are.</summary>
    public const string LogHint = "details in quickstart.log in the output folder";

    private readonly MLContext _ml = new(seed: 1);
    private StreamWriter? _log;
    /// <summary>The stage running now, as the cancellation message names it.</summary>
    private string _running = "loading the inputs";
    /// <summary>The extraction checkpoint of this run (null until the teacher is known): what a cancelled run may keep.</summary>
    private string? _checkpoint;
    /// <summary>Whether the extraction finished, so its checkpoint holds every sample of the store.</summary>
    private bool _extracted;

    /// <summary>Runs every stage; bad inputs throw <see cref="InputException"/> before any work starts.</summary>
    public int Execute()
    {
        // Inputs first, so a bad file stops the run with one line before anything is written or trained.
        var task = LoadTask();
        CheckUnlabeled(task);
        var givenTeacher = options.TeacherPath is null ? null : LoadTeacher(options.TeacherPath);
        try
        {
            Directory.CreateDirectory(options.OutputFolder);
            _log = new StreamWriter(Path.Combine(options.OutputFolder, "quickstart.log")) { AutoFlush = true };
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            givenTeacher?.Dispose();
            throw new InputException($"--out: cannot write to '{options.OutputFolder}': {e.Message}", e);
        }
        try
        {
            return Run(task, givenTeacher);
        }
        catch (OperationCanceledException e) when (cancellation.IsCancellationRequested)
        {
            var message = CancelledMessage();
            lock (_log) _log.WriteLine($"Cancelled: {message}");
            throw new OperationCanceledException(message, e, cancellation);
        }
        catch (Exception e) when (e is not InputException)
        {
            lock (_log) _log.WriteLine(e.ToString());
            throw;
        }
    }

    /// <summary>
    /// What was running and what of it is kept. Only the extraction checkpoint outlives a run: the teacher is pretrained and
    /// the prompts tuned again by every run (the same seeds give the same ones), and the extraction then takes from the
    /// checkpoint every batch it holds instead of generating it again.
    /// </summary>
    private string CancelledMessage()
    {
        // The checkpoint may also be an earlier run's, cancelled in its extraction: this run would have resumed it too.
        var kept = _checkpoint is { } path && File.Exists(path)
            ? _extracted
                ? $"the extraction checkpoint {path} holds the whole store, and the next run with the same options takes it from there instead of generating it again"
                : $"the samples generated so far are in {path}, and the next run with the same options resumes the extraction from them"
            : "there is nothing to resume from yet, and the next run starts again";
        return $"{_running} was running; {kept}.";
    }

    /// <summary>Generated samples kept per label (--samples-per-label, else smaller under --quick).</summary>
    private int SamplesPerLabel => options.SamplesPerLabel ?? (Embedded ? QuickstartOptions.EmbeddedSamplesPerLabel : QuickstartOptions.DataSamplesPerLabel);

    /// <summary>The embedded café-review task (no --data, no own task).</summary>
    private bool Embedded => options.DataFolder is null && !options.OwnTask;

    private FewShotTask LoadTask()
    {
        if (options.OwnTask)
        {
            try
            {
                return LabelledTsv.LoadTask(options.TrainPath!, options.DevPath!, options.TestPath!, options.OwnTemplate(), options.Verbalizer!.Select(kv => kv.Key).ToList());
            }
            catch (Exception e) when (e is IOException or InvalidDataException or UnauthorizedAccessException)
            {
                throw new InputException(e.Message, e);
            }
        }
        if (options.DataFolder is null) return EmbeddedCafeReviews.Task(testPerLabel: options.Quick ? 40 : 100);
        try
        {
            return FewShotBenchmarks.Load(options.DataFolder, options.Task, options.Seed);
        }
        catch (Exception e) when (e is IOException or InvalidDataException or ArgumentException or UnauthorizedAccessException)
        {
            throw new InputException($"--data: {e.Message}", e);
        }
    }

    /// <summary>
    /// --unlabeled: a single-text task, and enough sentences to draw. The pipeline draws them again when the store students
    /// train; reading the file here as well costs a second or two and turns a bad file into one line before anything trains.
    /// </summary>
    private void CheckUnlabeled(FewShotTask task)
    {
        if (options.UnlabeledPath is not { } path) return;
        if (task.IsPair) throw new InputException($"--unlabeled gives single sentences; task {task.Name} takes sentence pairs.");
        try
        {
            if (options.UnlabeledAfterTraining) CorpusSentences.DrawWithTuningDocuments(path, UnlabeledRows, RetriKTPipelineOptions.DefaultStoreCorpusTuningRows, seed: 1);
            else CorpusSentences.Draw(path, UnlabeledRows, seed: 1, CorpusSentences.StoreOption);
        }
        catch (Exception e) when (e is IOException or InvalidDataException or UnauthorizedAccessException)
        {
            throw new InputException($"--unlabeled: {e.Message}", e);
        }
    }

    private int UnlabeledRows => options.UnlabeledRows ?? RetriKTPipelineOptions.DefaultStoreCorpusRows;

    /// <summary>The recipe without the unlabelled text, for the student that cannot take it in after training.</summary>
    private static RetriKTPipelineOptions WithoutUnlabeled(RetriKTPipelineOptions recipe)
    {
        var copy = recipe.Clone();
        (copy.StoreCorpus, copy.StoreCorpusAfterTraining) = (null, false);
        return copy;
    }

    private static TeacherModel LoadTeacher(string path)
    {
        try
        {
            return TeacherModel.Load(path);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // Whatever the loader meets in a file that is not a teacher checkpoint, the input is what is wrong.
            throw new InputException($"--teacher '{path}' is not a loadable teacher checkpoint (a Hugging Face model directory or a llama2.c .bin): {ModelFiles.Describe(e)}", e);
        }
    }

    private int Run(FewShotTask task, TeacherModel? givenTeacher)
    {
        var log = _log!;
        // Everything the library says (progress lines, warnings) goes to quickstart.log; the console shows the bars.
        _ml.Log += (_, e) => { if (e.Kind != Microsoft.ML.Runtime.ChannelMessageKind.Trace) lock (log) log.WriteLine($"{e.Kind} {e.Source}: {e.Message}"); };
        var total = Stopwatch.StartNew();
        cancellation.ThrowIfCancellationRequested();

        AnsiConsole.Write(new Rule("[bold]RetriKT.MLNet Quickstart[/]").LeftJustified());
        AnsiConsole.MarkupLineInterpolated($"Task [bold]{task.Name}[/]: {task.Train.Count} training examples, {task.Dev.Count} few-shot dev, {task.Test.Count} test; labels {string.Join(", ", task.Labels)}.");
        if (options.TeacherPath is null)
            AnsiConsole.MarkupLine("[yellow]No pretrained LLM can be shipped with this sample or downloaded at run time, so the teacher is a small LLaMA-style model " +
                                   "pretrained here, in-process, on the task's own unlabeled pool (written for this sample). It is far weaker than a real LLM; " +
                                   "pass --teacher <HF directory or llama2.c .bin> to use one.[/]");
        AnsiConsole.MarkupLineInterpolated($"Output and logs: {options.OutputFolder}");

        TeacherModel teacher = null!;
        string teacherPath = options.TeacherPath ?? Path.Combine(options.OutputFolder, "teacher");
        StoreExtraction extraction = null!;
        TrainedStudent student = null!;
        ClassificationScores fewShotOnly = null!;
        RetriKTPipelineResult storeOnly = null!;
        ClassificationScores teacherScores = null!;
        long fewShotOnlyParameters = 0;
        RetriKTPipeline pipeline = null!;
        var times = new Dictionary<string, TimeSpan>();

        AnsiConsole.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new SpinnerColumn())
            .Start(ctx =>
            {
                var pretrain = ctx.AddTask("Teacher", maxValue: 1);
                var soft = ctx.AddTask("Soft prompts (stage 1)", maxValue: 1);
                var ppo = ctx.AddTask("Soft prompts (PPO)", maxValue: 1);
                var extract = ctx.AddTask("Knowledge extraction", maxValue: 1);
                var train = ctx.AddTask("RetrievalClassifier", maxValue: 1);
                var judge = ctx.AddTask("Teacher evaluation", maxValue: 1);
                var progress = new StageProgress(new Dictionary<string, ProgressTask>
                {
                    ["Pretrain"] = pretrain, ["Stage 1"] = soft, ["PPO"] = ppo, ["Extraction"] = extract, ["RetrievalClassifier"] = train,
                    [RetriKTPipeline.TeacherEvaluationStage] = judge,
                });
                // The pipeline reports the extraction's start on its bar: from then on, a cancelled run has generated samples to keep.
                progress.Started += stage => { if (stage == "Extraction") _running = "the knowledge extraction"; };

                _running = "the teacher's pretraining";
                Time(times, "teacher", () => teacher = givenTeacher ?? PretrainTeacher(teacherPath, progress));
                pretrain.Value = pretrain.MaxValue;

                // The method runs through the same RetriKTPipeline as the evaluation harness. A benchmark task (--data) runs
                // the harness's measured recipe; the embedded task runs the library's defaults, on which its student reaches
                // the teacher. The Quickstart passes what its command line sets and, under --quick, smaller numbers for a smoke run.
                var recipe = Embedded ? new RetriKTPipelineOptions() : RetriKTPipelineOptions.EvaluatedRecipe();
                recipe.PpoSteps = options.PpoSteps;
                recipe.SamplesPerLabel = SamplesPerLabel;
                (recipe.StoreCorpus, recipe.StoreCorpusRows, recipe.StoreCorpusAfterTraining) = (options.UnlabeledPath, UnlabeledRows, options.UnlabeledAfterTraining);
                if (options.Quick) (recipe.SupervisedEpochs, recipe.StudentEpochs) = (4, 10);
                // The output folder is the user's: a checkpoint of another run stops the Quickstart unless --fresh.
                (recipe.WorkDirectory, recipe.ReplaceMismatchedCheckpoint) = (options.OutputFolder, options.Fresh);
                recipe.PpoMetricsCsvPath = Path.Combine(options.OutputFolder, "ppo.csv");
                // The reloaded model explains its predictions with the store entries it retrieved, so it keeps their texts.
                (recipe.StudentSaveStoreTexts, recipe.StudentNeighborsColumnName) = (true, "Neighbors");
                pipeline = new RetriKTPipeline(_ml, teacher, teacherPath, recipe);
                _checkpoint = pipeline.ExtractionCheckpointPath(task);
                _running = "the soft prompts' tuning";
                try
                {
                    extraction = pipeline.ExtractStore(task, progress, cancellation);
                }
                catch (InvalidDataException e) when (e.Message.StartsWith(options.OutputFolder, StringComparison.Ordinal))
                {
                    // The output folder holds another run's extraction checkpoint: an input, not a crash.
                    throw new InputException($"{e.Message} Or pass --fresh.", e);
                }
                _extracted = true;
                times["soft prompts"] = extraction.SoftPromptTime;
                times["extraction"] = extraction.ExtractionTime;
                soft.Value = soft.MaxValue; ppo.Value = ppo.MaxValue; extract.Value = extract.MaxValue;

                // The store is data (Text, Text2, Label, SoftLabel, Fidelity, Source): it could as well be saved, filtered
                // or brought from elsewhere. One student recipe for all three rows, so the only differences are the store and retrieval.
                _running = "the RetrievalClassifier's training";
                Time(times, "student", () => student = pipeline.TrainStudent(task, extraction, useRetrieval: true, progress, cancellation));
                _running = "the reference students' training";
                Time(times, "reference students", () =>
                {
                    (fewShotOnly, fewShotOnlyParameters) = pipeline.EvaluateFewShotStudent(task, cancellation: cancellation);
                    // Added after training, the sentences reach a student only through retrieval: the store-only student trains without them.
                    var storeOnlyPipeline = options.UnlabeledAfterTraining ? new RetriKTPipeline(_ml, teacher, teacherPath, WithoutUnlabeled(recipe)) : pipeline;
                    storeOnly = storeOnlyPipeline.EvaluateStudentOnStore(task, extraction, useRetrieval: false, cancellation: cancellation);
                });
                train.Value = train.MaxValue;

                // The teacher's row of the results table: minutes on a CPU (a forward pass per test row), so it has its bar.
                _running = "the teacher's evaluation";
                Time(times, "teacher evaluation", () => (teacherScores, _) = pipeline.EvaluateTeacher(task, progress, cancellation));
                judge.Value = judge.MaxValue;
            });
        // Cancelled after the last stage checked: what is left takes seconds, but the user asked to stop.
        cancellation.ThrowIfCancellationRequested();

        WarnAboutShortLabels(extraction.Report, SamplesPerLabel);

        // ---- evaluation on the held-out test split (the pipeline scored the student; its head alone is scored the same way)
        double withStore = student.Test.Accuracy, alone = pipeline.Score(task, student.Student.WithRetrievalWeight(0)).Accuracy;

        // ---- model.zip, reload in a fresh MLContext, predictions with explanations
        var zip = Path.Combine(options.OutputFolder, "model.zip");
        var testView = FewShotTask.ToDataView(_ml, task.Test);
        // The served model maps the predicted key back to its label text, so a service sends only Text (and Text2):
        // samples/RetriKT.WebApi serves this file as is (--ModelPath).
        var serving = student.Student.Append(_ml.Transforms.Conversion.MapKeyToValue("PredictedLabel").Fit(student.Student.Transform(testView)));
        // Atomically: a model.zip a server already watches is replaced whole, and a failed save leaves the last one.
        _ml.Model.SaveAtomically(serving, testView.Schema, zip);
        var fresh = new MLContext();
        var loaded = fresh.Model.LoadVerified(zip, out _);
        using var engine = fresh.Model.CreatePredictionEngine<ReviewInput, ReviewPrediction>(loaded);
        var latencies = new List<double>();
        foreach (var row in task.Test.Take(200))
        {
            var clock = Stopwatch.StartNew();
            engine.Predict(new ReviewInput { Text = row.Text, Text2 = row.Text2 });
            latencies.Add(clock.Elapsed.TotalMilliseconds);
        }
        latencies.Sort();

        PrintResults([
            new("Majority class", RetriKTPipeline.EvaluateMajority(task).Accuracy, 0),
            new("Teacher (prompted classifier, verbalizer)", teacherScores.Accuracy, teacher.ParameterCount),
            new("Student on the few-shot examples only (no store)", fewShotOnly.Accuracy, fewShotOnlyParameters),
            new("Student on the store, no retrieval (store only)", storeOnly.Test.Accuracy, storeOnly.StudentParameters),
            new("RetriKT student, its head alone (λ = μ = 0)", alone, student.Student.ParameterCount),
            new($"RetriKT student, head + retrieval (λ = {student.Student.RetrievalWeight:F1}, term match μ = {student.Student.LexicalRetrievalWeight:F1})",
                withStore, student.Student.ParameterCount),
        ]);

        var facts = new Table().Border(TableBorder.Rounded).AddColumn("Fact").AddColumn("Value");
        facts.AddRow("Knowledge store", $"{extraction.Store.Count} entries ({extraction.Report})".EscapeMarkup());
        if (options.UnlabeledPath is { } unlabeled)
            facts.AddRow("Unlabelled text", (options.UnlabeledAfterTraining
                ? $"{student.StoreCorpusEntries} sentences of {unlabeled} labelled by the teacher, added to the RetriKT student's store after it trained (mix chosen again on {RetriKTPipelineOptions.DefaultStoreCorpusTuningRows} of other documents); the store-only student has none"
                : $"{student.StoreCorpusEntries} sentences of {unlabeled} labelled by the teacher, in the store students' stores").EscapeMarkup());
        facts.AddRow("Student / teacher parameters", $"{student.Student.ParameterCount:N0} / {teacher.ParameterCount:N0} = {(double)student.Student.ParameterCount / teacher.ParameterCount:P1}");
        facts.AddRow("Soft prompt parameters", extraction.PromptParameters.ToString("N0"));
        facts.AddRow("model.zip", $"{new FileInfo(zip).Length / 1024.0:F0} KiB (student + store; no teacher inside)");
        facts.AddRow("Latency (PredictionEngine, reloaded)", string.Create(CultureInfo.InvariantCulture, $"p50 {latencies[latencies.Count / 2]:F2} ms, p99 {latencies[(int)(latencies.Count * 0.99)]:F2} ms"));
        facts.AddRow("Wall time", string.Join(", ", times.Select(t => $"{t.Key} {t.Value.TotalSeconds:F0} s")) + $"; total {total.Elapsed.TotalSeconds:F0} s");
        AnsiConsole.Write(facts);

        AnsiConsole.Write(new Rule("Predictions of the reloaded model: each part's probability of the predicted label × its weight, and the neighbours of the retrieval part that weighs more").LeftJustified());
        var reloadedStudent = ((IEnumerable<ITransformer>)loaded).OfType<RetrievalClassifierTransformer>().Single();
        foreach (var row in task.Test.Take(3))
        {
            var why = reloadedStudent.Explain(row.Text, task.IsPair ? row.Text2 : null, neighbors: 3);
            var p = why.Prediction;
            var served = engine.Predict(new ReviewInput { Text = row.Text, Text2 = row.Text2 });
            AnsiConsole.MarkupLineInterpolated($"[bold]{Short(Shown(row.Text, task.IsPair ? row.Text2 : null))}[/] → [green]{served.PredictedLabel}[/] (gold {row.Label}; p = {p.Scores.Max():F2})");
            // What each part alone gives the predicted label, and its weight in the prediction.
            var parts = new List<(string Name, PredictionPart Part)> { ("head", why.Head), ("retrieval", why.Retrieval) };
            if (why.TermMatch is { } terms) parts.Add(("term match", terms));
            AnsiConsole.MarkupLine("    [grey]" + string.Join(" · ", parts.Select(x =>
                string.Create(CultureInfo.InvariantCulture, $"{x.Name} {x.Part.Scores[p.LabelIndex]:F2} × {x.Part.Weight:F2}"))).EscapeMarkup() + "[/]");
            foreach (var n in p.Neighbors)
                AnsiConsole.MarkupLineInterpolated($"    {n.Similarity:F2}  ({n.Label}) {Short(Shown(n.Text ?? "", n.Text2))}");
        }
        (loaded as IDisposable)?.Dispose();
        student.Dispose(); teacher.Dispose();
        return 0;
    }

    /// <summary>One row of the results table.</summary>
    private sealed record ResultRow(string Model, double Accuracy, long Parameters);

    /// <summary>The results table: the one place rows are printed (add a row to the list passed in).</summary>
    private static void PrintResults(IReadOnlyList<ResultRow> rows)
    {
        var table = new Table().Border(TableBorder.Rounded).Title("[bold]Results on the held-out test split[/]")
            .AddColumn("Model").AddColumn(new TableColumn("Accuracy").RightAligned()).AddColumn(new TableColumn("Parameters").RightAligned());
        foreach (var row in rows) table.AddRow(row.Model.EscapeMarkup(), Pct(row.Accuracy), row.Parameters.ToString("N0"));
        AnsiConsole.Write(table);
    }

    /// <summary>A label the extraction could not fill is said on the console, not only in quickstart.log.</summary>
    private static void WarnAboutShortLabels(ExtractionReport report, int wanted)
    {
        foreach (var (label, kept) in report.Kept.Where(kv => kv.Value < wanted))
        {
            if (kept == 0)
                AnsiConsole.MarkupLineInterpolated($"[yellow]Warning: label '{label}' got no generated samples ({report.Generated[label]} generated, all filtered out); its store entries are only the few-shot examples.[/]");
            else
                AnsiConsole.MarkupLineInterpolated($"[yellow]Warning: label '{label}' kept {kept} of {wanted} wanted generated samples ({report.Generated[label]} generated).[/]");
        }
    }

    private TeacherModel PretrainTeacher(string directory, StageProgress progress)
    {
        var pool = EmbeddedCafeReviews.UnlabeledPool();
        // The trainer hands its tokenizer over as files; the tokenizer keeps their bytes and the checkpoint saves those, so
        // the files go to a temporary folder deleted at once. Written into the teacher's folder, they were left there by a
        // run stopped in its pretraining (and by every finished run).
        var tokenizerFolder = Directory.CreateTempSubdirectory("retrikt-quickstart-tokenizer-").FullName;
        TeacherTokenizer tokenizer;
        try { tokenizer = ByteLevelBpeTrainer.Train(pool, 512, tokenizerFolder); }
        finally { Directory.Delete(tokenizerFolder, recursive: true); }
        var config = new TeacherConfig
        {
            ModelType = "llama", VocabSize = 512, HiddenSize = 128, IntermediateSize = 344, NumLayers = 4, NumHeads = 4, NumKeyValueHeads = 4,
            HeadDim = 32, MaxPositions = 128, TieWordEmbeddings = true, BosTokenId = tokenizer.BosId, EosTokenIds = [tokenizer.EosId!.Value],
        };
        var teacher = TeacherModel.Create(config, tokenizer, seed: 1);
        new TeacherPretrainer(_ml, new TeacherPretrainerOptions
        {
            Steps = options.Quick ? 120 : 1200, BatchSize = 16, SequenceLength = 64, LearningRate = 3e-3, WarmupSteps = 50,
        }).Train(teacher, pool, progress, cancellation);
        teacher.RequiresGrad = false;
        teacher.SaveCheckpoint(directory);
        return teacher;
    }

    private static void Time(Dictionary<string, TimeSpan> times, string name, Action action)
    {
        var clock = Stopwatch.StartNew();
        action();
        times[name] = clock.Elapsed;
    }

    private static string Pct(double x) => x.ToString("P1", CultureInfo.InvariantCulture);
    /// <summary>A row as the console shows it: a pair's two texts joined as the model's Neighbors column joins them.</summary>
    private static string Shown(string text, string? text2) => text2 is null ? text : text + RetrievalClassifierTransformer.NeighborPairSeparator + text2;

    private static string Short(string s) => s.Length <= 90 ? s : s[..87] + "...";

    /// <summary>Routes the library's progress reports to the matching Spectre progress bar (synchronously).</summary>
    private sealed class StageProgress(Dictionary<string, ProgressTask> bars) : IProgress<TrainingProgress>
    {
        private string? _last;

        /// <summary>Raised with a stage's name at its first report after another stage's.</summary>
        public event Action<string>? Started;

        public void Report(TrainingProgress value)
        {
            if (value.Stage != _last) Started?.Invoke(_last = value.Stage);
            if (!bars.TryGetValue(value.Stage, out var bar)) return;
            bar.MaxValue = Math.Max(1, value.TotalSteps);
            bar.Value = value.Step;
        }
    }
}
