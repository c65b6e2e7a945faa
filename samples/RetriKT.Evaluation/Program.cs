using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using RetriKT.Evaluation;
using RetriKT.MLNet.Teacher;

// RetriKT low-resource evaluation harness.
//   dotnet run --project samples/RetriKT.Evaluation -c Release -- [run|report] [options]
// run (default): builds or loads the teacher, runs every pending (task, seed, row), appends results to the JSONL, then
//                rewrites the report. Re-running skips rows already in the JSONL (same teacher and settings).
// report:        rewrites docs/RESULTS.md and the plot from the JSONL only.
// Exit codes: 0 done (and help), 2 a bad option (one line, then the usage), 1 a failure (a damaged, missing or unreadable teacher or
// data file, a cache in use: one line), 130 cancelled by Ctrl+C or SIGTERM (finished rows and checkpoints are kept).
CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;

var argv = args.ToList();
string verb = argv.Count > 0 && !argv[0].StartsWith("--", StringComparison.Ordinal) ? argv[0] : "run";
if (verb is not ("run" or "teacher" or "probe" or "report" or "help")) return Fail($"Unknown verb '{verb}'. Use run, teacher, probe, report or help.");
if (verb == "help" || argv.Contains("--help")) { Console.WriteLine(Cli.Usage); return 0; }

var repo = Cli.FindRepositoryRoot();
Cli.Options o;
try { o = Cli.Parse(argv.Skip(verb == argv.FirstOrDefault() ? 1 : 0).ToList(), repo, verb); }
catch (ArgumentException e) { return Fail(e.Message); }

// The report is rewritten at the end of run and by report: a report it would wipe is refused before any work.
if (verb is "run" or "report" && ResultsReport.HandWrittenProblem(o.ReportPath) is { } reportProblem)
{
    Console.Error.WriteLine(reportProblem);
    return 2;
}

void Log(string line) => Console.WriteLine($"{DateTime.Now:HH:mm:ss} {line}");
var wall = Stopwatch.StartNew();
var commandLine = "dotnet run --project samples/RetriKT.Evaluation -c Release -- " + string.Join(' ', args);

// One process per cache: a second run there would overwrite the first's teacher and store checkpoints.
CacheLock? cacheLock = null;
if (verb is "run" or "teacher" or "probe")
{
    try { cacheLock = CacheLock.Acquire(o.CacheRoot, commandLine); }
    catch (Exception e) when (e is IOException or UnauthorizedAccessException) // held by another run, or a folder this user cannot write
    {
        Console.Error.WriteLine(e.Message);
        return 1;
    }
}
using var releaseCache = cacheLock;

// Ctrl+C and SIGTERM (docker stop, systemd, a CI timeout) cancel alike: the running step stops at its next check and the
// harness says what is kept (SIGTERM used to end it at once, with code 143 and not a word). A second signal ends the
// process at once (the runtime's default), for a step slow to stop. report is quick and stops at the runtime's default.
using var cts = new CancellationTokenSource();
string cancelling = verb == "run" ? "Cancelling after the current step…" : "Cancelling after the current step (the last checkpoint resumes)…";
bool Cancel()
{
    if (cts.IsCancellationRequested) return false;
    cts.Cancel();
    Log(cancelling);
    return true;
}
using var sigterm = verb == "report" ? null : PosixSignalRegistration.Create(PosixSignal.SIGTERM, context => context.Cancel = Cancel());
if (verb != "report") Console.CancelKeyPress += (_, e) => e.Cancel = Cancel();

if (verb is "teacher" or "probe")
{
    try
    {
        foreach (var task in o.Tasks)
        {
            var path = verb == "probe" && o.TeacherPath is { } given ? given : TeacherBuilder.EnsureBuilt(o.DataRoot, o.CacheRoot, task, o.Teacher, Log, cts.Token, o.ShippedTeachersRoot);
            if (verb == "probe") TeacherProbe.Run(o.DataRoot, task, path, trainSample: 2000, Log, cts.Token);
        }
    }
    catch (OperationCanceledException)
    {
        Log("Cancelled; re-run to resume from the last checkpoint.");
        return 130;
    }
    catch (Exception e) when (e is InvalidDataException or IOException or UnauthorizedAccessException) // a damaged, missing or unreadable teacher or checkpoint: one line
    {
        Console.Error.WriteLine(e.Message);
        return 1;
    }
    return 0;
}

if (verb == "run")
{
    Log($"Data: {o.DataRoot}; tasks {string.Join(",", o.Tasks)}; seeds {string.Join(",", o.Seeds)}; rows {string.Join(",", o.Rows)}; results {o.ResultsPath}");
    TeacherModel? loaded = null;
    string? loadedPath = null, teacherDescription = null;
    // Resolved once per task: resolving a shipped teacher loads and hashes its weights, and the harness asks for the
    // teacher from several places per row.
    var teacherPaths = new Dictionary<string, string>();
    (TeacherModel, string) LoadTeacher(string task)
    {
        if (!teacherPaths.TryGetValue(task, out var path))
            teacherPaths[task] = path = o.TeacherPath ?? TeacherBuilder.EnsureBuilt(o.DataRoot, o.CacheRoot, task, o.Teacher, Log, cts.Token, o.ShippedTeachersRoot);
        if (loaded is not null && loadedPath == path) return (loaded, path);
        loaded?.Dispose();
        loaded = TeacherBuilder.Load(path);
        loadedPath = path;
        loaded.RequiresGrad = false;
        teacherDescription = $"{loaded.Config} — {loaded.ParameterCount:N0} parameters, sha256 {loaded.ContentHash[..16]}…, at {path}";
        TeacherRecords.Record(o.TeacherRecordsPath, task, path, loaded);
        Log($"Teacher ({task}): " + teacherDescription);
        return (loaded, path);
    }
    var harness = new EvaluationHarness(new HarnessSettings
    {
        DataRoot = o.DataRoot, Tasks = o.Tasks, Seeds = o.Seeds, Rows = o.Rows, ResultsPath = o.ResultsPath, WorkDirectory = o.WorkDirectory,
        PpoSteps = o.PpoSteps, PpoLearningRate = o.PpoLearningRate, PpoRolloutsPerStep = o.PpoRolloutsPerStep, Pipeline = HarnessSettings.PipelineWith(o.PipelineOverrides),
    }, LoadTeacher, Log, task => TinyEncoderBuilder.EnsureBuilt(o.DataRoot, o.CacheRoot, task, o.Teacher, Log, cts.Token));
    try
    {
        var (ran, skipped) = harness.Run(cts.Token);
        Log($"Done: {ran} rows ran, {skipped} skipped, {wall.Elapsed.TotalMinutes:F1} min.");
    }
    catch (OperationCanceledException)
    {
        Log("Cancelled; finished rows are in the results file, re-run to continue.");
        return 130;
    }
    catch (Exception e) when (e is InvalidDataException or IOException or UnauthorizedAccessException) // a damaged, missing or unreadable file or folder: one line, no stack trace
    {
        Console.Error.WriteLine(e.Message);
        return 1;
    }
    catch (ArgumentException e) // settings a row cannot run with (checked when its pipeline is built): one line, no stack trace
    {
        Console.Error.WriteLine(e.Message);
        return 2;
    }
    finally { loaded?.Dispose(); }
    RunLog.Append(o.RunLogPath, commandLine, wall.Elapsed, teacherDescription);
}

// A report from a results file that is not there would rewrite the tables empty (a misspelt --results, for example).
if (verb == "report" && !File.Exists(o.ResultsPath)) return Fail($"--results '{o.ResultsPath}' does not exist; report rewrites the tables from it.");
ResultsLog resultsLog;
JsonLinesContent<RunRecord> runs;
JsonLinesContent<System.Text.Json.Nodes.JsonObject> teachers;
// A results, run or teacher record file this user cannot read: one line, as a report that cannot be written.
try
{
    resultsLog = new ResultsLog(o.ResultsPath);
    runs = RunLog.Read(o.RunLogPath);
    teachers = TeacherRecords.Read(o.TeacherRecordsPath);
}
catch (Exception e) when (e is IOException or UnauthorizedAccessException)
{
    Console.Error.WriteLine($"The results could not be read: {e.Message}");
    return 1;
}
foreach (var warning in resultsLog.Ignored.Concat(runs.Ignored).Concat(teachers.Ignored)) Log("Warning: " + warning);
var results = resultsLog.Results;
// A report or plot that cannot be written (its folder is a file, the disk is full): one line; a run's results are kept.
try
{
    var plot = ResultsReport.WritePlot(results, o.PlotPath, Log);
    var storeSizePlot = ResultsReport.WriteStoreSizePlot(results, o.PlotPath, Log);
    ResultsReport.WriteMarkdown(results, o, runs.Records, teachers.Records, plot, o.ReportPath, storeSizePlot);
    Log($"Report: {o.ReportPath}{(plot is null ? "" : ", plot: " + plot)}{(storeSizePlot is null ? "" : ", " + storeSizePlot)}");
}
catch (Exception e) when (e is IOException or UnauthorizedAccessException)
{
    Console.Error.WriteLine($"The report could not be written ({o.ReportPath}, plot {o.PlotPath}): {e.Message}");
    return 1;
}
return 0;

static int Fail(string message)
{
    Console.Error.WriteLine(message);
    Console.Error.WriteLine(Cli.Usage);
    return 2;
}
