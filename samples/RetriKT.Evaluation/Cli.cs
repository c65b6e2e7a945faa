using System.Globalization;
using System.Text.Json;
using RetriKT.Samples.Data;

namespace RetriKT.Evaluation;

/// <summary>Command-line options of the harness.</summary>
public static class Cli
{
    public const string Usage = """
        Usage: dotnet run --project samples/RetriKT.Evaluation -c Release -- [run|teacher|probe|report] [options]
          run                 build or load each task's teacher, run every pending row, rewrite the report (default)
          teacher             only build (or resume building) the stand-in teacher of each task in --tasks
          probe               the teacher's verbalizer accuracy (raw, calibrated) on dev and on 2,000 training rows
          report              rewrite the report and plot from the results file
          --data <dir>        data folder (default: <repo>/../shared/data)
          --tasks <list>      comma-separated: SST-2,MRPC,RTE,CB,BoolQ (default: all five)
          --seeds <list>      LM-BFF seeds (default: 13,21,42,87,100; FewGLUE tasks have one split)
          --rows <list>       e.g. majority,fewshot-student,teacher-prompted,retrikt,retrikt-ppo (default: every row of
                              the table; README.md lists the rows, and those run on request only)
          --teacher <path>    use this teacher (HF folder or llama2.c .bin) for every task instead of building one per task
          --cache <dir>       where built teachers are cached (default: ~/.cache/retrikt)
          --shipped-teachers <dir>  finished teachers committed with the repository, used before building one
                              (default: <repo>/samples/RetriKT.Evaluation/teachers)
          --teacher-steps-a <n>  stage-A (unlabeled in-domain text) steps of a built teacher (default 2000)
          --teacher-steps-b <n>  stage-B (task training split through the template) steps (default 600)
          --teacher-steps-a2 <n> steps of a second pass over stage A's text before stage B (default 1500)
          --teacher-rate-a2 <r>  peak learning rate of that pass (default 0.0015)
          --teacher-steps-b2 <n> steps of a continuation of stage B on the same data (default 0)
          --teacher-dropout <p>  dropout during stage B and its continuation (default 0)
          --teacher-corpus-parts <n> stage-A part files per corpus, 0 = all (default 0)
          --teacher-label-first <p>  share of stage B's rows also rendered label first (default 0)
          --ppo-steps <n>     PPO iterations of the retrikt-ppo row (default 20)
          --ppo-rate <r>      PPO's Adam rate in the retrikt-ppo row (default 0.03; halved by the trust region after an overshoot)
          --ppo-rollouts <n>  rollouts per PPO iteration in the retrikt-ppo row (default 64)
          --set <k=v,...>     override RetriKTPipelineOptions fields, e.g. --set SamplesPerLabel=256,StudentHiddenSize=48
          --results <file>    resumable results JSONL (default: docs/evaluation/results.jsonl)
          --report <file>     markdown report (default: docs/RESULTS.md)
          --plot <file>       plot (default: docs/evaluation/results.png; .svg when ScottPlot cannot render)
        """;

    public sealed record Options
    {
        public required string DataRoot { get; init; }
        public required IReadOnlyList<string> Tasks { get; init; }
        public required IReadOnlyList<int> Seeds { get; init; }
        public required IReadOnlyList<string> Rows { get; init; }
        public string? TeacherPath { get; init; }
        public required string CacheRoot { get; init; }
        /// <summary>Finished teachers committed with the repository (the cache's layout), used before building one.</summary>
        public required string ShippedTeachersRoot { get; init; }
        public required TeacherSettings Teacher { get; init; }
        public int PpoSteps { get; init; } = HarnessSettings.DefaultPpoSteps;
        public double PpoLearningRate { get; init; } = HarnessSettings.DefaultPpoLearningRate;
        public int PpoRolloutsPerStep { get; init; } = HarnessSettings.DefaultPpoRolloutsPerStep;
        /// <summary>RetriKTPipelineOptions field overrides from <c>--set</c>.</summary>
        public IReadOnlyDictionary<string, string> PipelineOverrides { get; init; } = new Dictionary<string, string>();
        public required string ResultsPath { get; init; }
        public required string ReportPath { get; init; }
        public required string PlotPath { get; init; }
        public string RunLogPath => Path.Combine(Path.GetDirectoryName(ResultsPath)!, "runs.jsonl");
        /// <summary>The recipe and measurements of every teacher the results were made with (from its done.json).</summary>
        public string TeacherRecordsPath => Path.Combine(Path.GetDirectoryName(ResultsPath)!, "teachers.jsonl");
        public string WorkDirectory => Path.Combine(CacheRoot, "work");
    }

    public static readonly string[] DefaultTasks = ["SST-2", "MRPC", "RTE", "CB", "BoolQ"];

    /// <summary>The options that set how a stand-in teacher is built: with <c>--teacher</c> none is built.</summary>
    private static readonly string[] TeacherBuildOptions =
        ["teacher-steps-a", "teacher-steps-b", "teacher-steps-a2", "teacher-rate-a2", "teacher-steps-b2", "teacher-dropout", "teacher-corpus-parts", "teacher-label-first"];

    /// <summary>The options each verb reads (run reads them all). Another was taken and changed nothing.</summary>
    private static readonly Dictionary<string, string[]> VerbOptions = new()
    {
        ["teacher"] = ["data", "tasks", "cache", "shipped-teachers", .. TeacherBuildOptions],
        ["probe"] = ["data", "tasks", "teacher", "cache", "shipped-teachers", .. TeacherBuildOptions],
        ["report"] = ["results", "report", "plot"],
    };

    /// <summary>Parses <paramref name="args"/> (the options after the verb) for <paramref name="verb"/>: an option the verb does not read is refused.</summary>
    public static Options Parse(IReadOnlyList<string> args, string repo, string verb = "run")
    {
        var values = new Dictionary<string, string>(StringComparer.Ordinal);
        for (int i = 0; i < args.Count; i++)
        {
            if (!args[i].StartsWith("--", StringComparison.Ordinal)) throw new ArgumentException($"Unexpected argument '{args[i]}'.");
            if (i + 1 >= args.Count) throw new ArgumentException($"Option {args[i]} needs a value.");
            string name = args[i][2..], value = args[++i];
            // An unset variable (--teacher "$TEACHER") would be a path named after the working folder, or no tasks or rows at all.
            if (string.IsNullOrWhiteSpace(value)) throw new ArgumentException($"Option --{name} has an empty value.");
            // --set may repeat (its pairs add up); any other option given twice would silently keep only the last value.
            if (values.TryGetValue(name, out var earlier))
                values[name] = name == "set" ? earlier + "," + value : throw new ArgumentException($"Option --{name} is given twice ('{earlier}', '{value}'); give it once.");
            else values[name] = value;
        }
        var named = values.Keys.ToList();
        string Get(string name, string fallback) => values.Remove(name, out var v) ? v : fallback;
        int GetInt(string name, int fallback, int minimum = 0) => int.TryParse(Get(name, fallback.ToString(CultureInfo.InvariantCulture)), NumberStyles.Integer, CultureInfo.InvariantCulture, out var n) && n >= minimum
            ? n : throw new ArgumentException($"--{name} must be {(minimum == 0 ? "a non-negative" : "a positive")} integer.");
        // A rate or share out of its range would be taken as it is and fail (or be clipped) hours later, in the teacher's
        // build or the PPO row: refused here with its range (NaN and infinity too). NumberStyles.Float, not double.Parse's
        // default, which takes ',' as a thousands separator ("0,1" read as 1).
        double GetDouble(string name, double fallback, Func<double, bool> inRange, string range)
        {
            if (!values.Remove(name, out var text)) return fallback;
            return double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var x) && double.IsFinite(x) && inRange(x)
                ? x : throw new ArgumentException($"--{name} must be a number {range}, found '{text}'.");
        }
        double GetRate(string name, double fallback) => GetDouble(name, fallback, x => x > 0, "above 0");
        double GetShare(string name, double fallback, bool oneIncluded) =>
            GetDouble(name, fallback, x => x >= 0 && (oneIncluded ? x <= 1 : x < 1), oneIncluded ? "from 0 to 1" : "from 0 up to (not including) 1");
        List<string> List(string name, IEnumerable<string> fallback) => values.Remove(name, out var v)
            ? v.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToList() : fallback.ToList();

        var tasks = List("tasks", DefaultTasks);
        if (tasks.Count == 0) throw new ArgumentException("--tasks is empty.");
        // The table, the plot and the cells not yet run cover these five: a task the data has beside them (CoLA, QNLI)
        // ran, went into the results file and was left out of the report's table.
        foreach (var t in tasks)
            if (!DefaultTasks.Contains(t)) throw new ArgumentException($"Unknown task '{t}'. Known: {string.Join(", ", DefaultTasks)}.");
        var seeds = List("seeds", FewShotBenchmarks.LmBffSeeds.Select(s => s.ToString(CultureInfo.InvariantCulture)))
            .Select(s => int.TryParse(s, CultureInfo.InvariantCulture, out var n) ? n : throw new ArgumentException($"Seed '{s}' is not an integer.")).ToList();
        if (seeds.Count == 0) throw new ArgumentException("--seeds is empty.");
        // A seed without a split is a bad option (exit code 2) here, not a missing data folder found when the row runs.
        foreach (var s in seeds)
            if (!FewShotBenchmarks.LmBffSeeds.Contains(s)) throw new ArgumentException($"--seeds: {s} is not an LM-BFF seed ({string.Join(", ", FewShotBenchmarks.LmBffSeeds)}).");
        var rows = List("rows", Evaluation.Rows.All);
        if (rows.Count == 0) throw new ArgumentException("--rows is empty.");
        foreach (var r in rows)
            if (!Evaluation.Rows.IsKnown(r)) throw new ArgumentException($"Unknown row '{r}'. Known: {string.Join(", ", Evaluation.Rows.All.Concat(Evaluation.Rows.Sweeps).Concat(Evaluation.Rows.Experiments))}.");
        // The PPO options set the PPO rows only: with --rows that has none, they were taken and changed nothing.
        if (!rows.Any(Evaluation.Rows.UsesPpo) && new[] { "ppo-steps", "ppo-rate", "ppo-rollouts" }.FirstOrDefault(values.ContainsKey) is { } unused)
            throw new ArgumentException($"--{unused} sets the rows {Evaluation.Rows.RetriKTPpo} and {Evaluation.Rows.StoreOnlyPpo}, and --rows has neither.");
        var overrides = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var pair in List("set", []).Select(kv => kv.Split('=', 2)))
        {
            if (pair.Length != 2) throw new ArgumentException($"--set takes Name=Value pairs, found '{pair[0]}'.");
            // Only one value can be kept: the other would be dropped without a word.
            if (!overrides.TryAdd(pair[0], pair[1])) throw new ArgumentException($"--set {pair[0]} is given twice ('{overrides[pair[0]]}', '{pair[1]}'); give it once.");
        }
        var home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
        var options = new Options
        {
            DataRoot = Path.GetFullPath(Get("data", Path.Combine(repo, "..", "shared", "data"))),
            Tasks = tasks, Seeds = seeds, Rows = rows,
            TeacherPath = values.Remove("teacher", out var teacher) ? Path.GetFullPath(teacher) : null,
            CacheRoot = Path.GetFullPath(Get("cache", Path.Combine(home, ".cache", "retrikt"))),
            ShippedTeachersRoot = Path.GetFullPath(Get("shipped-teachers", TeacherBuilder.ShippedRoot(repo))),
            Teacher = new TeacherSettings
            {
                StageASteps = GetInt("teacher-steps-a", new TeacherSettings().StageASteps),
                StageBSteps = GetInt("teacher-steps-b", new TeacherSettings().StageBSteps),
                StageA2Steps = GetInt("teacher-steps-a2", new TeacherSettings().StageA2Steps),
                StageA2LearningRate = GetRate("teacher-rate-a2", new TeacherSettings().StageA2LearningRate),
                StageB2Steps = GetInt("teacher-steps-b2", new TeacherSettings().StageB2Steps),
                CorpusParts = GetInt("teacher-corpus-parts", new TeacherSettings().CorpusParts),
                StageBDropout = GetShare("teacher-dropout", new TeacherSettings().StageBDropout, oneIncluded: false),
                StageBLabelFirst = GetShare("teacher-label-first", new TeacherSettings().StageBLabelFirst, oneIncluded: true),
            },
            PpoSteps = GetInt("ppo-steps", HarnessSettings.DefaultPpoSteps),
            PpoLearningRate = GetRate("ppo-rate", HarnessSettings.DefaultPpoLearningRate),
            PpoRolloutsPerStep = GetInt("ppo-rollouts", HarnessSettings.DefaultPpoRolloutsPerStep, minimum: 1),
            PipelineOverrides = overrides,
            ResultsPath = Path.GetFullPath(Get("results", Path.Combine(repo, "docs", "evaluation", "results.jsonl"))),
            ReportPath = Path.GetFullPath(Get("report", Path.Combine(repo, "docs", "RESULTS.md"))),
            PlotPath = Path.GetFullPath(Get("plot", Path.Combine(repo, "docs", "evaluation", "results.png"))),
        };
        if (values.Count > 0) throw new ArgumentException($"Unknown option(s): {string.Join(", ", values.Keys.Select(k => "--" + k))}.");
        if (VerbOptions.TryGetValue(verb, out var read) && named.FirstOrDefault(k => !read.Contains(k)) is { } unread)
            throw new ArgumentException(verb == "teacher" && unread == "teacher"
                ? "--teacher gives the teacher that run and probe use; the teacher verb builds the stand-in teachers instead (leave --teacher out, or run probe with it)."
                : $"--{unread} is not read by the {verb} verb, which takes {string.Join(", ", read.Select(o => "--" + o))}.");
        if (named.Contains("teacher") && TeacherBuildOptions.FirstOrDefault(named.Contains) is { } build)
            throw new ArgumentException($"--{build} sets how a stand-in teacher is built, and with --teacher none is built.");
        // Written after the rows ran (each result as its row finishes, the report and plot at the end): a folder there
        // would fail only then, with the rows' work done.
        foreach (var (option, path) in new[] { ("--results", options.ResultsPath), ("--report", options.ReportPath), ("--plot", options.PlotPath) })
            if (Directory.Exists(path)) throw new ArgumentException($"{option} '{path}' is a folder; expected a file (created when missing).");
        // Each is written on its own: a report written over the results file (--results and --report naming one file) wiped
        // every result the run had appended, and the next run warned about each line of markdown and ran every row again.
        var outputs = new[] { ("--results", options.ResultsPath), ("--report", options.ReportPath), ("--plot", options.PlotPath),
            ("the run records beside --results", options.RunLogPath), ("the teacher records beside --results", options.TeacherRecordsPath) };
        var sameFile = OperatingSystem.IsWindows() || OperatingSystem.IsMacOS() ? StringComparer.OrdinalIgnoreCase : StringComparer.Ordinal;
        for (int i = 0; i < outputs.Length; i++)
            for (int j = i + 1; j < outputs.Length; j++)
                if (sameFile.Equals(outputs[i].Item2, outputs[j].Item2))
                    throw new ArgumentException($"{outputs[i].Item1} and {outputs[j].Item1} are the same file '{outputs[i].Item2}'; each needs its own.");
        HarnessSettings.PipelineWith(options.PipelineOverrides); // a misspelt or out-of-range --set fails here, before any work
        if (options.TeacherPath is { } given && !File.Exists(given) && !Directory.Exists(given))
            throw new ArgumentException($"--teacher '{given}' does not exist (a Hugging Face model directory or a llama2.c .bin).");
        return options;
    }

    /// <summary>The repository root (the folder holding RetriKT.MLNet.sln) above the working directory or the executable.</summary>
    public static string FindRepositoryRoot()
    {
        foreach (var start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
                if (File.Exists(Path.Combine(dir.FullName, "RetriKT.MLNet.sln"))) return dir.FullName;
        return Directory.GetCurrentDirectory();
    }
}

/// <summary>One finished harness invocation (command, wall time, teacher, machine), for the report's "how to reproduce".</summary>
public sealed record RunRecord(string Command, double Minutes, string? Teacher, string Machine, DateTime FinishedUtc);

/// <summary>Append-only log of harness invocations next to the results file.</summary>
public static class RunLog
{
    public static void Append(string path, string command, TimeSpan wall, string? teacher)
    {
        var record = new RunRecord(command, wall.TotalMinutes, teacher, Machine(), DateTime.UtcNow);
        JsonLines.Append(path, JsonSerializer.Serialize(record));
    }

    /// <summary>The recorded runs; a line that is not one is named in <see cref="JsonLinesContent{T}.Ignored"/>.</summary>
    public static JsonLinesContent<RunRecord> Read(string path) =>
        JsonLines.Read(path, l => JsonSerializer.Deserialize<RunRecord>(l) switch
        {
            // A JSON object of another shape (a result) deserializes to a run of no command and no machine: a blank entry in the report.
            { } run when string.IsNullOrEmpty(run.Command) || string.IsNullOrEmpty(run.Machine) => throw new JsonException("no Command or no Machine"),
            var run => run,
        }, "a run record", "the report's run list leaves it out");

    /// <summary>
    /// The machine a run used. The CPU's family/model and widest vector unit are part of it: MKL picks its kernels by
    /// them, and kernels that round differently move PPO's trajectory (the same code reproduced every prompt bit on one
    /// EPYC and not the rows measured on another, whose name read the same). The hash of the CPU's flag list tells
    /// apart two machines whose name, family and model read the same but whose hypervisors expose other instructions
    /// (the 2026-12-04 SST-2 PPO rows cannot be made again: that day's code, built again, trains the 2026-12-06 prompts bit
    /// for bit, and both runs' machine strings read the same).
    /// </summary>
    public static string Machine(string cpuInfo = "/proc/cpuinfo")
    {
        string cpu = "unknown CPU";
        try
        {
            var lines = File.ReadLines(cpuInfo).TakeWhile(l => l.Length > 0).ToList(); // the first processor's block
            string? Field(string name) => lines.FirstOrDefault(l => l.StartsWith(name, StringComparison.Ordinal) && l[name.Length..].TrimStart().StartsWith(':'))?.Split(':', 2)[1].Trim();
            cpu = Field("model name") ?? cpu;
            if (Field("cpu family") is { } family && Field("model") is { } model) cpu += $" (family {family} model {model})";
            // Order and spacing are the kernel's, not the CPU's: the set of flags is what is hashed.
            if ((Field("flags") ?? Field("Features")) is { } flags)
                cpu += $", CPU flags {KeyHash.Of(string.Join(' ', flags.Split(' ', StringSplitOptions.RemoveEmptyEntries).Distinct().Order(StringComparer.Ordinal)))[..8]}";
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        string vector = System.Runtime.Intrinsics.X86.Avx512F.IsSupported ? "AVX-512" : System.Runtime.Intrinsics.X86.Avx2.IsSupported ? "AVX2"
            : System.Runtime.Intrinsics.Arm.AdvSimd.IsSupported ? "NEON" : "no wide vectors";
        return $"{cpu}, {vector}, {Environment.ProcessorCount} cores, {System.Runtime.InteropServices.RuntimeInformation.OSDescription}, .NET {Environment.Version}, TorchSharp CPU";
    }
}
