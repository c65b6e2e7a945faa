using System.CommandLine;
using RetriKT.MLNet.Pipeline;
using RetriKT.MLNet.SoftPrompt;
using RetriKT.Samples.Data;

namespace RetriKT.Quickstart;

/// <summary>A bad input (option, file, folder, data row): one line for the console, exit code 2.</summary>
public sealed class InputException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>Command line of the Quickstart. Relative paths resolve against the caller's working directory.</summary>
public sealed record QuickstartOptions
{
    /// <summary>Teacher checkpoint (HF directory or llama2.c .bin); null pretrains a small teacher in-process.</summary>
    public string? TeacherPath { get; init; }
    /// <summary>Benchmark data folder; null runs the embedded café-review task.</summary>
    public string? DataFolder { get; init; }
    /// <summary>Task in <see cref="DataFolder"/>. Default SST-2.</summary>
    public string Task { get; init; } = "SST-2";
    /// <summary>LM-BFF split seed. Default 13.</summary>
    public int Seed { get; init; } = 13;
    /// <summary>Output folder (model.zip, logs, checkpoints). Default ./retrikt-quickstart.</summary>
    public string OutputFolder { get; init; } = Path.GetFullPath("retrikt-quickstart");
    /// <summary>PPO steps. Default 8 (<see cref="QuickPpoSteps"/> under --quick when --ppo-steps is not given).</summary>
    public int PpoSteps { get; init; } = 8;
    /// <summary>Generated samples kept per label; null: <see cref="EmbeddedSamplesPerLabel"/> or, with --data or the user's own task, <see cref="DataSamplesPerLabel"/> (under --quick, <see cref="QuickSamplesPerLabel"/> when --samples-per-label is not given).</summary>
    public int? SamplesPerLabel { get; init; }
    /// <summary>
    /// The embedded task's store: on it the student on the store scored 84.0 / 87.5 / 94.0 / 94.5 % at 64 / 128 / 256 / 512
    /// per label (teacher 95.0 %), and 256 costs about 10 s more than 64 (measured before the label prompts' init kept
    /// the label word, 2026-12-07; since then 90.0 % at 256, and 95.0 % with retrieval).
    /// </summary>
    public const int EmbeddedSamplesPerLabel = 256;
    /// <summary>
    /// A benchmark task's store (with --data the Quickstart runs <c>RetriKTPipelineOptions.EvaluatedRecipe</c>; 2,048 instead
    /// of its 4,096 halve the generation): on SST-2 seed 13 with the harness's stand-in teacher, 2,048 per label gave 75.0 %
    /// against 76.3 % at 4,096 and 70.9 % at 512 (docs/RESULTS.md, "Store size with early stopping").
    /// </summary>
    public const int DataSamplesPerLabel = 2048;
    /// <summary>Generated samples kept per label under --quick when --samples-per-label is not given.</summary>
    public const int QuickSamplesPerLabel = 12;
    /// <summary>PPO steps under --quick when --ppo-steps is not given.</summary>
    public const int QuickPpoSteps = 2;
    /// <summary>
    /// In-domain text without labels (a .txt file or a folder of them, one document per line): <see cref="UnlabeledRows"/>
    /// of its sentences are labelled by the teacher and join the student's store (<c>RetriKTPipelineOptions.StoreCorpus</c>).
    /// Null: none.
    /// </summary>
    public string? UnlabeledPath { get; init; }
    /// <summary>Sentences drawn from <see cref="UnlabeledPath"/>; null: the pipeline's default (32,768).</summary>
    public int? UnlabeledRows { get; init; }
    /// <summary>
    /// Add the <see cref="UnlabeledPath"/> sentences to the RetriKT student's store after it trained, without training
    /// again (<c>RetriKTPipelineOptions.StoreCorpusAfterTraining</c>): what they teach reaches predictions only through
    /// retrieval, and the student's mix is chosen again on sentences of other documents. The store-only student trains on
    /// the generated store alone.
    /// </summary>
    public bool UnlabeledAfterTraining { get; init; }
    /// <summary>
    /// An own task's few-shot examples: a tab-separated file with a header holding <c>text</c> (or <c>sentence</c>,
    /// <c>sentence1</c>), <c>label</c> and, when <see cref="Template"/> has <c>{text2}</c>, <c>text2</c> (or <c>sentence2</c>).
    /// With <see cref="DevPath"/>, <see cref="TestPath"/> and <see cref="Verbalizer"/>; instead of <see cref="DataFolder"/>.
    /// </summary>
    public string? TrainPath { get; init; }
    /// <summary>An own task's rows for choosing among models (never trained on); the same columns as <see cref="TrainPath"/>.</summary>
    public string? DevPath { get; init; }
    /// <summary>An own task's rows to score (never tuned on); the same columns as <see cref="TrainPath"/>.</summary>
    public string? TestPath { get; init; }
    /// <summary>
    /// An own task's labels with the word the teacher completes <see cref="Template"/> with for each, in score order
    /// (<c>label=word</c> pairs, comma-separated, e.g. <c>0=terrible,1=great</c>).
    /// </summary>
    public IReadOnlyList<KeyValuePair<string, string>>? Verbalizer { get; init; }
    /// <summary>
    /// An own task's prompt: <c>{text}</c>, <c>{label}</c> (where the label word goes) and, for sentence pairs, <c>{text2}</c>
    /// after <c>{text}</c>. Default <see cref="DefaultTemplate"/>.
    /// </summary>
    public string Template { get; init; } = DefaultTemplate;
    /// <summary>The prompt SST-2 uses (LM-BFF's), the default for an own task.</summary>
    public const string DefaultTemplate = "{text} It was{label}";
    /// <summary>Whether an own task is given (<see cref="TrainPath"/> and the rest).</summary>
    public bool OwnTask => TrainPath is not null;

    /// <summary>Whether an own task's prompt has a second text (<c>{text2}</c>): its files then need a <c>text2</c> column.</summary>
    public bool OwnPair => Template.Contains("{text2}", StringComparison.Ordinal);

    /// <summary>
    /// An own task's template: <see cref="Template"/> with <see cref="Verbalizer"/>'s words. A pair prompt generates the second
    /// text after the first and the prompt's words between them (as the GLUE pair templates do), so the store's entries
    /// keep real first texts of the task.
    /// </summary>
    public TaskTemplate OwnTemplate()
    {
        var template = new TaskTemplate
        {
            Name = "own",
            ClassificationFormat = Template,
            // The word follows the prompt directly: a leading space keeps it a word of its own unless the prompt has one.
            Verbalizer = Verbalizer!.ToDictionary(kv => kv.Key,
                kv => Template.Contains(" {label}", StringComparison.Ordinal) || char.IsWhiteSpace(kv.Value[0]) ? kv.Value : " " + kv.Value),
        };
        if (!OwnPair) return template;
        int first = Template.IndexOf("{text}", StringComparison.Ordinal), second = Template.IndexOf("{text2}", StringComparison.Ordinal);
        // The generated second text is tokenized with its own leading space, so the context ends without one.
        return template with
        {
            Text2Column = nameof(TextPairRow.Text2),
            Target = GenerationTarget.SecondPart,
            PairSeparator = Template[(first + "{text}".Length)..second].TrimEnd(),
        };
    }

    /// <summary>Smaller settings for smoke runs.</summary>
    public bool Quick { get; init; }
    /// <summary>Replace an extraction checkpoint in the output folder that belongs to another run instead of stopping.</summary>
    public bool Fresh { get; init; }

    private static readonly QuickstartOptions Defaults = new();

    /// <summary>The root command; <paramref name="run"/> receives the validated options and returns the exit code.</summary>
    public static RootCommand Command(Func<QuickstartOptions, int> run)
    {
        var teacher = new Option<string?>("--teacher") { Description = "Teacher LLM: a Hugging Face model directory or a llama2.c .bin. Default: a small teacher pretrained here on the embedded task.", HelpName = "path" };
        var data = new Option<string?>("--data") { Description = "Benchmark data folder laid out like the shared data (<Task>/k-shot/16-<seed>/… or <Task>/train32.jsonl …); needs --teacher.", HelpName = "folder" };
        var task = new Option<string>("--task") { Description = $"Task in --data: {string.Join(", ", FewShotBenchmarks.Tasks)}. Default {Defaults.Task}.", DefaultValueFactory = _ => Defaults.Task, HelpName = "name" };
        var seed = new Option<int>("--seed") { Description = $"LM-BFF split seed in --data ({string.Join(", ", FewShotBenchmarks.LmBffSeeds)}). Default {Defaults.Seed}.", DefaultValueFactory = _ => Defaults.Seed, HelpName = "n" };
        var output = new Option<string?>("--out") { Description = "Output folder: model.zip, quickstart.log, ppo.csv, the extraction checkpoint (extraction-*.jsonl). Default ./retrikt-quickstart.", HelpName = "folder" };
        var ppoSteps = new Option<int>("--ppo-steps") { Description = $"PPO steps. Default {Defaults.PpoSteps}.", DefaultValueFactory = _ => Defaults.PpoSteps, HelpName = "n" };
        var samples = new Option<int?>("--samples-per-label") { Description = $"Generated samples kept per label. Default {EmbeddedSamplesPerLabel} on the embedded task, {DataSamplesPerLabel} with --data or your own task.", HelpName = "n" };
        var unlabeled = new Option<string?>("--unlabeled") { Description = "In-domain text without labels (.txt file or folder, one document per line): its sentences are labelled by the teacher and join the student's store.", HelpName = "path" };
        var unlabeledRows = new Option<int?>("--unlabeled-rows") { Description = "Sentences drawn from --unlabeled. Default 32768.", HelpName = "n" };
        var afterTraining = new Option<bool>("--unlabeled-after-training") { Description = "Add --unlabeled's sentences to the RetriKT student's store after it trained (no training again; its mix is chosen again on sentences of other documents) instead of before." };
        var train = new Option<string?>("--train") { Description = "Your own task's few-shot examples: a tab-separated file with a header holding text (or sentence) and label, and text2 (or sentence2) when --template has {text2}. With --dev, --test, --verbalizer and --teacher; instead of --data.", HelpName = "file" };
        var dev = new Option<string?>("--dev") { Description = "Your own task's rows for choosing among models, never trained on (the columns of --train).", HelpName = "file" };
        var test = new Option<string?>("--test") { Description = "Your own task's rows to score, never tuned on (the columns of --train).", HelpName = "file" };
        var verbalizer = new Option<string?>("--verbalizer") { Description = "Your own task's labels, each with the word the teacher completes the prompt with, in score order: label=word pairs, comma-separated (e.g. 0=terrible,1=great).", HelpName = "pairs" };
        var template = new Option<string?>("--template") { Description = $"Your own task's prompt, with {{text}} and {{label}} where the label word goes; {{text2}} after {{text}} for sentence pairs (e.g. \"{{text}} Question: {{text2}}? Answer:{{label}}\"). Default \"{DefaultTemplate}\".", HelpName = "prompt" };
        var quick = new Option<bool>("--quick") { Description = "Smaller settings, for smoke runs (--ppo-steps and --samples-per-label, when given, are kept)." };
        var fresh = new Option<bool>("--fresh") { Description = "Start the knowledge extraction fresh when the output folder holds another run's checkpoint (moved aside) instead of stopping." };
        var root = new RootCommand("RetriKT.MLNet Quickstart: few-shot data → teacher + soft prompts (supervised, PPO) → knowledge store → " +
            "RetrievalClassifier → evaluation → model.zip. With no options: the embedded café-review task and a teacher pretrained in-process.")
        {
            teacher, data, task, seed, train, dev, test, verbalizer, template, output, ppoSteps, samples, unlabeled, unlabeledRows, afterTraining, quick, fresh,
        };
        root.SetAction(parse => run(Validate(new QuickstartOptions
        {
            TeacherPath = FullPath("--teacher", parse.GetValue(teacher)),
            DataFolder = FullPath("--data", parse.GetValue(data)),
            Task = parse.GetValue(task)!,
            Seed = parse.GetValue(seed),
            OutputFolder = FullPath("--out", parse.GetValue(output)) ?? Defaults.OutputFolder,
            // --quick makes the settings not given smaller; one given on the command line is taken as it is.
            PpoSteps = parse.GetValue(quick) && parse.GetResult(ppoSteps) is not { Implicit: false } ? QuickPpoSteps : parse.GetValue(ppoSteps),
            SamplesPerLabel = parse.GetValue(samples) ?? (parse.GetValue(quick) ? QuickSamplesPerLabel : null),
            UnlabeledPath = FullPath("--unlabeled", parse.GetValue(unlabeled)),
            UnlabeledRows = parse.GetValue(unlabeledRows),
            UnlabeledAfterTraining = parse.GetValue(afterTraining),
            TrainPath = FullPath("--train", parse.GetValue(train)),
            DevPath = FullPath("--dev", parse.GetValue(dev)),
            TestPath = FullPath("--test", parse.GetValue(test)),
            Verbalizer = parse.GetValue(verbalizer) is { } v ? ParseVerbalizer(v) : null,
            Template = parse.GetValue(template) ?? DefaultTemplate,
            Quick = parse.GetValue(quick),
            Fresh = parse.GetValue(fresh),
        }, templateGiven: parse.GetResult(template) is not null, taskGiven: parse.GetResult(task) is { Implicit: false }, seedGiven: parse.GetResult(seed) is { Implicit: false })));
        return root;
    }

    /// <summary>
    /// A path option's value as a full path (relative to the working directory), null when the option is not given. An empty
    /// value (<c>--teacher "$TEACHER"</c> with the variable unset) names the option instead of failing in Path.GetFullPath.
    /// </summary>
    private static string? FullPath(string option, string? value) => value is null ? null
        : string.IsNullOrWhiteSpace(value) ? throw new InputException($"{option}: expected a path, found an empty value.")
        : Path.GetFullPath(value);

    /// <summary>"0=terrible,1=great" → (0, terrible), (1, great), in order.</summary>
    private static List<KeyValuePair<string, string>> ParseVerbalizer(string value)
    {
        var pairs = new List<KeyValuePair<string, string>>();
        foreach (var part in value.Split(','))
        {
            int at = part.IndexOf('=');
            string label = at > 0 ? part[..at].Trim() : "", word = at > 0 ? part[(at + 1)..].Trim() : "";
            if (label.Length == 0 || word.Length == 0)
                throw new InputException($"--verbalizer: expected label=word pairs separated by commas (e.g. 0=terrible,1=great), found '{part}' in '{value}'.");
            if (pairs.Any(p => p.Key == label)) throw new InputException($"--verbalizer: label '{label}' is given twice in '{value}'.");
            pairs.Add(new(label, word));
        }
        if (pairs.Count < 2) throw new InputException($"--verbalizer: at least 2 labels are needed, found {pairs.Count} in '{value}'.");
        return pairs;
    }

    private static QuickstartOptions Validate(QuickstartOptions o, bool templateGiven, bool taskGiven, bool seedGiven)
    {
        var ownParts = new (string Option, bool Given)[] { ("--train", o.TrainPath is not null), ("--dev", o.DevPath is not null), ("--test", o.TestPath is not null), ("--verbalizer", o.Verbalizer is not null) };
        if (ownParts.Any(p => p.Given) || templateGiven)
        {
            if (ownParts.FirstOrDefault(p => !p.Given) is { Option: { } missing })
                throw new InputException($"{missing} is needed too: your own task takes --train, --dev, --test and --verbalizer (and --teacher).");
            if (o.DataFolder is not null || taskGiven || seedGiven)
                throw new InputException($"{(o.DataFolder is not null ? "--data" : taskGiven ? "--task" : "--seed")} selects a benchmark task; your own task (--train, --dev, --test) replaces it.");
            if (o.TeacherPath is null)
                throw new InputException("--train needs --teacher as well (the teacher that knows your task's domain; the Quickstart's own teacher knows only its café reviews).");
            if (o.OwnPair && !(o.Template.IndexOf("{text}", StringComparison.Ordinal) is var first and >= 0 && o.Template.IndexOf("{text2}", StringComparison.Ordinal) > first))
                throw new InputException($"--template: the second text is generated after the first, so {{text2}} must follow {{text}} in \"{o.Template}\".");
            foreach (var (option, path) in new[] { ("--train", o.TrainPath!), ("--dev", o.DevPath!), ("--test", o.TestPath!) })
                if (!File.Exists(path)) throw new InputException($"{option}: file '{path}' does not exist.");
            try
            {
                var template = o.OwnTemplate();
                template.Validate(o.Verbalizer!.Select(kv => kv.Key).ToList());
            }
            catch (ArgumentException e)
            {
                throw new InputException($"--template/--verbalizer: {e.Message}", e);
            }
        }
        if (o.TeacherPath is not null && !File.Exists(o.TeacherPath) && !Directory.Exists(o.TeacherPath))
            throw new InputException($"--teacher: '{o.TeacherPath}' does not exist.");
        if (o.DataFolder is null && (taskGiven || seedGiven))
            throw new InputException($"{(taskGiven ? "--task" : "--seed")} selects a task in --data, which is not given (without --data the Quickstart runs the embedded café-review task).");
        if (o.DataFolder is not null && !Directory.Exists(o.DataFolder))
            throw new InputException($"--data: folder '{o.DataFolder}' does not exist.");
        if (o.DataFolder is not null && o.TeacherPath is null)
            throw new InputException("--data needs --teacher as well (samples/RetriKT.Evaluation pretrains and caches teachers for the benchmark tasks).");
        if (!FewShotBenchmarks.Tasks.Contains(o.Task))
            throw new InputException($"--task: unknown task '{o.Task}'; expected one of {string.Join(", ", FewShotBenchmarks.Tasks)}.");
        if (o.Seed < 0) throw new InputException($"--seed: expected a non-negative integer, found {o.Seed}.");
        // A FewGLUE task has one split: a seed for it would be taken and ignored, and the run read as that seed's.
        if (seedGiven && o.DataFolder is not null && o.Task is "CB" or "BoolQ")
            throw new InputException($"--seed: {o.Task} has one few-shot split (FewGLUE's train32/dev32); --seed selects an LM-BFF split of " +
                                     $"{string.Join(", ", FewShotBenchmarks.Tasks.Where(t => t is not ("CB" or "BoolQ")).SkipLast(1))} or {FewShotBenchmarks.Tasks.Where(t => t is not ("CB" or "BoolQ")).Last()}.");
        if (o.PpoSteps < 0) throw new InputException($"--ppo-steps: expected a non-negative integer, found {o.PpoSteps}.");
        if (o.SamplesPerLabel is < 1) throw new InputException($"--samples-per-label: expected a positive integer, found {o.SamplesPerLabel}.");
        if (o.UnlabeledRows is not null && o.UnlabeledPath is null) throw new InputException("--unlabeled-rows: sets how many sentences --unlabeled gives, which is not given.");
        if (o.UnlabeledAfterTraining && o.UnlabeledPath is null) throw new InputException("--unlabeled-after-training: adds the sentences of --unlabeled, which is not given.");
        if (o.UnlabeledRows is < 1) throw new InputException($"--unlabeled-rows: expected a positive integer, found {o.UnlabeledRows}.");
        if (o.UnlabeledPath is not null && !File.Exists(o.UnlabeledPath) && !Directory.Exists(o.UnlabeledPath))
            throw new InputException($"--unlabeled: '{o.UnlabeledPath}' does not exist.");
        if (File.Exists(o.OutputFolder))
            throw new InputException($"--out: '{o.OutputFolder}' is a file; expected a folder (it is created when missing).");
        return o;
    }
}
