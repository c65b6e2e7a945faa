using RetriKT.Evaluation;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.Tests.Pipeline;

/// <summary>The harness's resumable results file: finished (task, seed, row) cells are skipped on re-run.</summary>
public sealed class EvaluationHarnessTests : IDisposable
{
    private readonly TempDir _folder = new("retrikt-harness-");
    private string Temp => _folder.Path;

    public void Dispose() => _folder.Dispose();

    /// <summary>The teacher loader of a harness that runs only the majority row, which must not load one.</summary>
    private static (MLNet.Teacher.TeacherModel, string) NoTeacher(string task) => throw new InvalidOperationException("the majority row must not load a teacher");

    private HarnessSettings Settings(string results, params int[] seeds) => new()
    {
        DataRoot = SharedData.Path("data"), Tasks = ["SST-2", "CB"], Seeds = seeds, Rows = [Rows.Majority], ResultsPath = results,
    };

    [SharedDataFact]
    public void FinishedRowsAreSkippedAndATornLineIsRunAgain()
    {
        var results = Path.Combine(Temp, "results.jsonl");
        var log = new List<string>();
        // The majority row needs no teacher: loading one here would be a bug in the resume logic's key computation.

        var first = new EvaluationHarness(Settings(results, 13, 21), NoTeacher, log.Add).Run();
        Assert.Equal((3, 0), first); // SST-2 seeds 13 and 21, CB once (FewGLUE has one split)
        var lines = File.ReadAllLines(results);
        Assert.Equal(3, lines.Length);
        var stored = new ResultsLog(results).Results;
        Assert.Contains(stored, r => r.Task == "CB" && r.Seed is null && r.Row == Rows.Majority);
        var sst13 = Assert.Single(stored, r => r.Task == "SST-2" && r.Seed == 13);
        Assert.Equal(872, sst13.TestRows);
        Assert.InRange(sst13.Accuracy, 0.5, 0.52); // 444 of 872 positive

        // Same cells again: nothing runs, nothing is appended.
        var second = new EvaluationHarness(Settings(results, 13, 21), NoTeacher, log.Add).Run();
        Assert.Equal((0, 3), second);
        Assert.Equal(lines, File.ReadAllLines(results));

        // A kill mid-write leaves a torn last line: it is ignored, only the new seed runs, and the next line starts cleanly.
        File.AppendAllText(results, "{\"Task\":\"SST-2\",\"Seed\":42,\"Ro");
        var third = new EvaluationHarness(Settings(results, 13, 42), NoTeacher, log.Add).Run();
        Assert.Equal((1, 2), third);
        var reloaded = new ResultsLog(results).Results;
        Assert.Equal(4, reloaded.Count);
        Assert.Contains(reloaded, r => r.Task == "SST-2" && r.Seed == 42);
        Assert.Contains(log, l => l.Contains("skipped", StringComparison.Ordinal));
    }

    /// <summary>
    /// A last line torn by a kill mid-write is cut off when the next result is appended: it stayed in the middle of the
    /// file for good, named in a warning on every run and report, and ../shared/tools/transfer-goals, which reads every
    /// line as JSON, stopped on it with a traceback. A whole record without its newline (an edited file) is kept.
    /// </summary>
    [SharedDataFact]
    public void ATornLastLineIsCutOffWhenTheNextResultIsAppended()
    {
        var results = Path.Combine(Temp, "results.jsonl");
        Assert.Equal((1, 0), new EvaluationHarness(Settings(results, 13) with { Tasks = ["SST-2"] }, NoTeacher, _ => { }).Run());
        // Longer than the chunks the end of the file is searched in.
        File.AppendAllText(results, "{\"Task\":\"SST-2\",\"Seed\":21,\"Row\":\"majority\",\"Notes\":\"" + new string('x', 10_000));
        var log = new List<string>();
        Assert.Equal((1, 1), new EvaluationHarness(Settings(results, 13, 21) with { Tasks = ["SST-2"] }, NoTeacher, log.Add).Run());
        Assert.Contains(log, l => l.Contains($"{results} line 2: not a result", StringComparison.Ordinal)); // the run still names it
        var lines = File.ReadAllLines(results);
        Assert.Equal(2, lines.Length);
        Assert.All(lines, line => System.Text.Json.JsonDocument.Parse(line).Dispose());
        Assert.Empty(new ResultsLog(results).Ignored);
        Assert.Equal([13, 21], new ResultsLog(results).Results.Select(r => r.Seed ?? 0).Order());

        File.WriteAllText(results, lines[0] + "\n" + lines[1]);
        new ResultsLog(results).Append(new RowResult { Task = "SST-2", Seed = 42, Row = Rows.Majority, ConfigKey = "none", Accuracy = 0.5092, TestRows = 872 });
        Assert.Equal([13, 21, 42], new ResultsLog(results).Results.Select(r => r.Seed ?? 0).Order());
        Assert.Equal(lines, File.ReadAllLines(results).Take(2));
    }

    /// <summary>
    /// A line that is not a result (damaged, or torn by a kill and followed by later lines) takes its row out of the
    /// report and makes run do it again: both say so, naming the file and the line, instead of dropping it silently.
    /// </summary>
    [SharedDataFact]
    public void ADamagedLineIsNamedInAWarningOnRunAndOnReport()
    {
        var results = Path.Combine(Temp, "results.jsonl");
        Assert.Equal((3, 0), new EvaluationHarness(Settings(results, 13, 21), NoTeacher, _ => { }).Run());
        var lines = File.ReadAllLines(results);
        lines[1] = lines[1][..40];
        File.WriteAllLines(results, lines);

        var log = new List<string>();
        Assert.Equal((1, 2), new EvaluationHarness(Settings(results, 13, 21), NoTeacher, log.Add).Run());
        Assert.Contains(log, l => l.Contains($"{results} line 2: not a result", StringComparison.Ordinal));

        var (code, output, error) = ChildProcess.RunApp("RetriKT.Evaluation.dll",
            ["report", "--results", results, "--report", Path.Combine(Temp, "RESULTS.md"), "--plot", Path.Combine(Temp, "plot.png")]);
        Assert.True(code == 0, $"exit code {code}; stderr: {error}");
        Assert.Contains($"{results} line 2: not a result", output + error);
    }

    /// <summary>
    /// A line that is JSON but no result (a run record written to the wrong file, a row of null) is named like a torn
    /// line: the first was kept as a result of no task and no row without a word, and the second stopped report with a
    /// NullReferenceException's stack trace.
    /// </summary>
    [SharedDataFact]
    public void AJsonLineOfAnotherShapeIsNamedInAWarningAndTheReportIsWritten()
    {
        var results = Path.Combine(Temp, "results.jsonl");
        Assert.Equal((1, 0), new EvaluationHarness(Settings(results, 13) with { Tasks = ["SST-2"] }, NoTeacher, _ => { }).Run());
        File.AppendAllLines(results, [
            "{\"Command\":\"dotnet run\",\"Minutes\":1.5,\"Teacher\":null,\"Machine\":\"m\",\"FinishedUtc\":\"2026-12-01T00:00:00Z\"}",
            "{\"Task\":\"SST-2\",\"Seed\":13,\"Row\":null,\"Accuracy\":0.9}"]);
        Assert.Single(new ResultsLog(results).Results);

        var (code, output, error) = ChildProcess.RunApp("RetriKT.Evaluation.dll",
            ["report", "--results", results, "--report", Path.Combine(Temp, "RESULTS.md"), "--plot", Path.Combine(Temp, "plot.png")]);
        Assert.True(code == 0, $"exit code {code}; stderr: {error}");
        Assert.Contains($"Warning: {results} line 2: not a result (no Task or no Row), ignored", output);
        Assert.Contains($"Warning: {results} line 3: not a result (no Task or no Row), ignored", output);
    }

    /// <summary>
    /// Two runs on different caches may share a results file: a row the other run finished after this one started is
    /// skipped when this one comes to it, not run a second time (the file used to be read once, at the start).
    /// </summary>
    [SharedDataFact]
    public void ARowAnotherRunFinishedMeanwhileIsSkipped()
    {
        var results = Path.Combine(Temp, "results.jsonl");
        var other = new ResultsLog(results);
        var log = new List<string>();
        void Log(string line)
        {
            log.Add(line);
            // While this run is on seed 13, the other run finishes seed 21.
            if (line.StartsWith("[SST-2 seed 13] majority: running", StringComparison.Ordinal))
                other.Append(new RowResult { Task = "SST-2", Seed = 21, Row = Rows.Majority, ConfigKey = "none", Accuracy = 0.5092, TestRows = 872 });
        }
        Assert.Equal((1, 1), new EvaluationHarness(Settings(results, 13, 21) with { Tasks = ["SST-2"] }, NoTeacher, Log).Run());
        Assert.Contains("[SST-2 seed 21] majority: already in", string.Join("\n", log));
        Assert.Equal(2, File.ReadAllLines(results).Length);
    }

    /// <summary>
    /// A row's key names its settings and teacher, not its data: a results file made on other data (a test split cut to
    /// 100 rows) had its row skipped as "already in" and reported beside this data's rows. A recorded test split of
    /// another size than the data's now fails in one line naming the file, the row and both sizes.
    /// </summary>
    [SharedDataFact]
    public void AResultMeasuredOnATestSplitOfAnotherSizeIsNotTakenForThisDatas()
    {
        var results = Path.Combine(Temp, "results.jsonl");
        new ResultsLog(results).Append(new RowResult { Task = "SST-2", Seed = 13, Row = Rows.Majority, ConfigKey = "none", Accuracy = 0.5, TestRows = 100 });

        var error = Assert.Throws<InvalidDataException>(() => new EvaluationHarness(Settings(results, 13) with { Tasks = ["SST-2"] }, NoTeacher, _ => { }).Run());

        Assert.StartsWith($"{results}: SST-2 seed 13 majority was measured on 100 test rows, but the test split under ", error.Message);
        Assert.EndsWith(" has 872: results of other data; give this data its own --results file.", error.Message);
        Assert.Single(File.ReadAllLines(results));
    }

    /// <summary>
    /// A row's config key names its settings and teacher, not its data: after an edit of a data file that kept its row
    /// count (labels corrected), the recorded row was skipped as done and its old number reported. Each row now records
    /// the key of the files it read, and a run on other files stops in one line naming the row and both keys. Rows
    /// recorded before (the table's) count as measured on ../shared/data: skipped there, refused on the edited copy.
    /// </summary>
    [SharedDataFact]
    public void ARowMeasuredOnADataFileSinceEditedIsRefusedInOneLine()
    {
        var shared = SharedData.Path("data");
        var data = Path.Combine(Temp, "data");
        var (train, dev, test) = RetriKT.Samples.Data.FewShotBenchmarks.SplitFiles(shared, "SST-2", 13);
        foreach (var file in new[] { train, dev, test })
        {
            var copy = Path.Combine(data, Path.GetRelativePath(shared, file));
            Directory.CreateDirectory(Path.GetDirectoryName(copy)!);
            File.Copy(file, copy);
        }
        var results = Path.Combine(Temp, "results.jsonl");
        var settings = Settings(results, 13) with { Tasks = ["SST-2"], DataRoot = data };
        Assert.Equal((1, 0), new EvaluationHarness(settings, NoTeacher, _ => { }).Run());
        var measured = Assert.Single(new ResultsLog(results).Results);
        Assert.Equal(EvaluationHarness.MeasuredDataKeys["SST-2|13"], measured.DataKey); // a copy of the data keys as the data

        // 300 labels of the test split flipped: the same 872 rows, other gold labels.
        var copiedTest = Path.Combine(data, "SST-2", "k-shot", "test.tsv");
        var lines = File.ReadAllLines(copiedTest);
        for (int i = 1; i <= 300; i++) lines[i] = lines[i][..^1] + (lines[i][^1] == '0' ? "1" : "0");
        File.WriteAllLines(copiedTest, lines);
        string edited = EvaluationHarness.DataKeyOf(data, "SST-2", 13);
        var error = Assert.Throws<InvalidDataException>(() => new EvaluationHarness(settings, NoTeacher, _ => { }).Run());
        Assert.Equal($"{results}: SST-2 seed 13 majority was measured on data {measured.DataKey}, but SST-2/k-shot/16-13/train.tsv, SST-2/k-shot/16-13/dev.tsv, " +
                     $"SST-2/k-shot/test.tsv under {data} are data {edited}: results of other data; give this data its own --results file.", error.Message);

        File.Delete(results);
        new ResultsLog(results).Append(measured with { DataKey = null });
        Assert.Equal((0, 1), new EvaluationHarness(settings with { DataRoot = shared }, NoTeacher, _ => { }).Run());
        var recordedBefore = Assert.Throws<InvalidDataException>(() => new EvaluationHarness(settings, NoTeacher, _ => { }).Run());
        Assert.Contains($"majority was measured on data {measured.DataKey} (recorded before results named their data: ../shared/data as its SHA256SUMS lists it), but ", recordedBefore.Message);
        Assert.Single(File.ReadAllLines(results));
    }

    /// <summary>
    /// The rows of docs/evaluation/results.jsonl name no data: they count as measured on the data whose keys
    /// <see cref="EvaluationHarness.MeasuredDataKeys"/> holds, which must be ../shared/data as it is, every split the harness runs.
    /// </summary>
    [SharedDataFact]
    public void TheSharedDataHasTheKeysOfTheDataTheTableWasMeasuredOn()
    {
        foreach (var task in Cli.DefaultTasks)
            foreach (var seed in task is "CB" or "BoolQ" ? [13] : RetriKT.Samples.Data.FewShotBenchmarks.LmBffSeeds)
                Assert.Equal(EvaluationHarness.MeasuredDataKeys[task is "CB" or "BoolQ" ? $"{task}|-" : $"{task}|{seed}"],
                    EvaluationHarness.DataKeyOf(SharedData.Path("data"), task, seed));
        Assert.Equal(17, EvaluationHarness.MeasuredDataKeys.Count);
    }

    /// <summary>
    /// Two runs on two caches that reach the same row together: the one that comes second finds the row claimed and
    /// skips it, instead of running it too (reading the results file again only sees finished rows). Once the claim is
    /// let go without a result (the other process was killed), the row runs; no claim file is left behind.
    /// </summary>
    [SharedDataFact]
    public void ARowAnotherRunIsRunningIsSkipped()
    {
        var results = Path.Combine(Temp, "results.jsonl");
        var other = new ResultsLog(results);
        var log = new List<string>();
        var settings = Settings(results, 13, 21) with { Tasks = ["SST-2"] };
        using (var held = other.TryClaim("SST-2", 21, Rows.Majority, "none"))
        {
            Assert.NotNull(held);
            Assert.Null(other.TryClaim("SST-2", 21, Rows.Majority, "none")); // one holder at a time, in one process too
            Assert.Equal((1, 1), new EvaluationHarness(settings, NoTeacher, log.Add).Run());
        }
        Assert.Contains($"[SST-2 seed 21] majority: another harness process sharing {results} is running it, skipped", log);
        Assert.Single(File.ReadAllLines(results));

        Assert.Equal((1, 1), new EvaluationHarness(settings, NoTeacher, log.Add).Run());
        Assert.Equal(2, File.ReadAllLines(results).Length);
        Assert.Empty(Directory.GetFiles(other.ClaimFolder));
    }

    /// <summary>
    /// runs.jsonl and teachers.jsonl beside the results are read like the results: a damaged line (or one that is JSON
    /// but not a record) leaves the report's "how to reproduce" or teacher table short, and report says so, naming the
    /// file and the line, as it does for results.jsonl.
    /// </summary>
    [SharedDataFact]
    public void DamagedRunAndTeacherLinesAreNamedInAWarningOnReport()
    {
        var results = Path.Combine(Temp, "results.jsonl");
        new ResultsLog(results).Append(new RowResult { Task = "SST-2", Seed = 13, Row = Rows.Majority, ConfigKey = "none", Accuracy = 0.5092, MacroF1 = 0.3374, TestRows = 872 });
        var runs = Path.Combine(Temp, "runs.jsonl");
        File.WriteAllLines(runs, ["{\"Command\":\"dotnet run\",\"Minutes\":1.5,\"Teacher\":null,\"Machine\":\"m\",\"FinishedUtc\":\"2026-12-01T00:00:00Z\"}", "{\"Command\":\"dotn"]);
        var teachers = Path.Combine(Temp, "teachers.jsonl");
        File.WriteAllLines(teachers, ["[1, 2]", "{\"task\":\"SST-2\",\"contentHash\":\"0123456789abcdef\",\"parameters\":10,\"config\":\"c\",\"source\":\"s\"}", "{\"task\""]);

        var (code, output, error) = ChildProcess.RunApp("RetriKT.Evaluation.dll",
            ["report", "--results", results, "--report", Path.Combine(Temp, "RESULTS.md"), "--plot", Path.Combine(Temp, "plot.png")]);
        Assert.True(code == 0, $"exit code {code}; stderr: {error}");
        Assert.Contains($"Warning: {runs} line 2: not a run record", output + error);
        Assert.Contains($"Warning: {teachers} line 1: not a teacher record", output + error);
        Assert.Contains($"Warning: {teachers} line 3: not a teacher record", output + error);
        Assert.DoesNotContain($"{runs} line 1:", output + error);
        Assert.DoesNotContain($"{teachers} line 2:", output + error);
        var report = File.ReadAllText(Path.Combine(Temp, "RESULTS.md"));
        Assert.Contains("dotnet run", report); // the good lines are still used
        Assert.Contains("0123456789ab", report);
    }

    /// <summary>
    /// A result written to runs.jsonl or teachers.jsonl (JSON, but of another shape) was taken as a run of no command and
    /// a teacher of task "?", blank entries in the report's run list and teacher table without a word; it is named as a
    /// damaged line is.
    /// </summary>
    [SharedDataFact]
    public void AResultInTheRunOrTeacherRecordsIsNamedInAWarningOnReport()
    {
        var results = Path.Combine(Temp, "results.jsonl");
        new ResultsLog(results).Append(new RowResult { Task = "SST-2", Seed = 13, Row = Rows.Majority, ConfigKey = "none", Accuracy = 0.5092, MacroF1 = 0.3374, TestRows = 872 });
        var result = File.ReadAllLines(results)[0];
        var runs = Path.Combine(Temp, "runs.jsonl");
        var teachers = Path.Combine(Temp, "teachers.jsonl");
        File.WriteAllLines(runs, [result]);
        File.WriteAllLines(teachers, [result]);

        var (code, output, error) = ChildProcess.RunApp("RetriKT.Evaluation.dll",
            ["report", "--results", results, "--report", Path.Combine(Temp, "RESULTS.md"), "--plot", Path.Combine(Temp, "plot.png")]);
        Assert.True(code == 0, $"exit code {code}; stderr: {error}");
        Assert.Contains($"Warning: {runs} line 1: not a run record (no Command or no Machine)", output);
        Assert.Contains($"Warning: {teachers} line 1: not a teacher record (no task or no contentHash)", output);
        var report = File.ReadAllText(Path.Combine(Temp, "RESULTS.md"));
        Assert.Contains("No run recorded.", report);
        Assert.DoesNotContain("## Teachers", report);
    }

    /// <summary>
    /// Two harness processes appending to one results file: .NET's FileMode.Append writes at the length seen when the
    /// file was opened (no O_APPEND), so without a lock one writer's line overwrites the other's.
    /// </summary>
    [Fact]
    public void TwoWritersAppendingAtOnceLoseNoLine()
    {
        var results = Path.Combine(Temp, "results.jsonl");
        const int perWriter = 150;
        Parallel.For(0, 2, new ParallelOptions { MaxDegreeOfParallelism = 2 }, writer =>
        {
            var log = new ResultsLog(results);
            for (int i = 0; i < perWriter; i++)
                log.Append(new RowResult { Task = "SST-2", Seed = writer, Row = Rows.Majority, ConfigKey = $"k{i}", Accuracy = 0.5, TestRows = 872, Notes = new string('x', 200 + 37 * writer) });
        });
        var lines = File.ReadAllLines(results);
        Assert.Equal(2 * perWriter, lines.Length);
        Assert.Equal(2 * perWriter, new ResultsLog(results).Results.Count);
    }

    /// <summary>
    /// Two runs sharing a results folder load the same teacher at once (the README's two lanes, seeds split): each read
    /// teachers.jsonl, found no record, and appended one, so the report's teacher table listed the teacher twice. The
    /// check and the append are one step under the file's lock.
    /// </summary>
    [SharedDataFact]
    public void ATeacherLoadedByTwoRunsAtOnceIsRecordedOnce()
    {
        var shipped = TeacherBuilder.LoadShipped(SharedData.RepoRoot, "SST-2");
        using var teacher = shipped.Teacher;
        _ = teacher.ContentHash; // hashed once, before the writers race
        var records = Path.Combine(Temp, "teachers.jsonl");
        using var start = new Barrier(4);
        Parallel.For(0, 4, new ParallelOptions { MaxDegreeOfParallelism = 4 }, _ =>
        {
            start.SignalAndWait();
            TeacherRecords.Record(records, "SST-2", shipped.Path, teacher);
        });
        Assert.Single(File.ReadAllLines(records));
        Assert.Single(TeacherRecords.Read(records).Records);
    }

    [SharedDataFact]
    public void ARowsKeyDoesNotDependOnTheCacheFolderAndRowsKeyedWithItAreStillFound()
    {
        var results = Path.Combine(Temp, "keys.jsonl");
        // One teacher for every harness below (each would otherwise load and hash the weights again); the harness does
        // not own it.
        var shipped = TeacherBuilder.LoadShipped(SharedData.RepoRoot, "SST-2");
        using var teacher = shipped.Teacher;
        (MLNet.Teacher.TeacherModel, string) Shipped(string task) => shipped;
        EvaluationHarness In(string cache) => new(Settings(results, 13) with { Tasks = ["SST-2"], Rows = [Rows.StoreOnlyStudent], WorkDirectory = Path.Combine(Temp, cache, "work") }, Shipped, _ => { });
        string inA = In("a").ConfigKeyOf("SST-2", Rows.StoreOnlyStudent), inB = In("b").ConfigKeyOf("SST-2", Rows.StoreOnlyStudent);
        Assert.Equal(inA, inB);
        // Before, the key hashed the cache folder: such a row is found under the folder it ran with, and no other.
        string legacyB = In("b").ConfigKeyOf("SST-2", Rows.StoreOnlyStudent, withCachePath: true);
        Assert.NotEqual(legacyB, In("a").ConfigKeyOf("SST-2", Rows.StoreOnlyStudent, withCachePath: true));
        Assert.NotEqual(inB, legacyB);

        // Found, nothing runs (a row that ran would take minutes; the token stops it within seconds and fails the test).
        void Found(string cache, string configKey)
        {
            File.Delete(results);
            new ResultsLog(results).Append(new RowResult { Task = "SST-2", Seed = 13, Row = Rows.StoreOnlyStudent, ConfigKey = configKey, Accuracy = 0.76, TestRows = 872 });
            using var soon = new CancellationTokenSource(TimeSpan.FromSeconds(60));
            Assert.Equal((0, 1), In(cache).Run(soon.Token));
        }
        Found("b", inA);
        Found("b", legacyB);
    }

    /// <summary>
    /// The few-shot students tune their retrieval mix on the few-shot dev split by StudentMixSelection: a --set of it
    /// changes their number, so it changes their key (a stale row would otherwise be kept); unset or named at its
    /// default, the key is the one the table was measured under.
    /// </summary>
    [SharedDataFact]
    public void TheFewShotStudentsKeyFollowsTheMixSelection()
    {
        var shipped = TeacherBuilder.LoadShipped(SharedData.RepoRoot, "SST-2");
        using var teacher = shipped.Teacher;
        (MLNet.Teacher.TeacherModel, string) Shipped(string task) => shipped;
        string Key(string row, Dictionary<string, string> set) =>
            new EvaluationHarness(Settings(Path.Combine(Temp, "keys.jsonl"), 13) with { Tasks = ["SST-2"], Pipeline = HarnessSettings.PipelineWith(set) }, Shipped, _ => { })
                .ConfigKeyOf("SST-2", row);
        foreach (var row in new[] { Rows.FewShotStudent, Rows.RetriKT })
        {
            string plain = Key(row, []);
            Assert.Equal(plain, Key(row, new() { ["StudentMixSelection"] = "LowestNll" }));
            Assert.NotEqual(plain, Key(row, new() { ["StudentMixSelection"] = "HighestAccuracy" }));
            Assert.NotEqual(Key(row, new() { ["StudentMixSelection"] = "BootstrapAverage" }), Key(row, new() { ["StudentMixSelection"] = "HighestAccuracy" }));
        }
    }

    /// <summary>
    /// The stores built since 2026-12-06 differ from those the table was first measured on (filters and variants
    /// mended), so the rows that train on a store are keyed anew and a rerun measures them again: the rows measured
    /// before (archived) do not match today's keys, and a task's store rows, measured again, do. The rows without a store
    /// keep the keys they were measured under in docs/evaluation/results.jsonl, so a rerun skips them. Each task with
    /// the settings its rows were run with (the teachers README): MRPC's, RTE's and CB's teachers without the second
    /// stage-A pass, their stores of 1,024, 512 and 1,024 samples per label; BoolQ with CB's teacher (BoolQ has none of
    /// its own), 1,024 per label. CB and BoolQ have no few-shot seeds: their rows are the seed-less ones. SST-2's
    /// seed-13 sweeps, its 8,192-per-label sweeps (seed 21 only) and its bagged-mix row are checked too. The pair tasks'
    /// store rows are keyed anew again for the variants of 2026-12-07 (a pair's second text varies), so they differ from
    /// the table's keys too, except MRPC's, which were measured again with them (2026-12-08) and carry today's keys.
    /// </summary>
    [SharedDataTheory]
    [InlineData("SST-2", "results-2026-12-06-sst2-stores-before-mending.jsonl", 1500, null, null)]
    [InlineData("MRPC", "results-2026-12-06-mrpc-stores-before-mending.jsonl", 0, 1024, null)]
    [InlineData("RTE", "results-2026-12-06-rte-stores-before-mending.jsonl", 0, 512, null)]
    [InlineData("CB", "results-2026-12-06-cb-stores-before-mending.jsonl", 0, 1024, null)]
    [InlineData("BoolQ", "results-2026-12-06-boolq-stores-before-mending.jsonl", 0, 1024, "CB")]
    public void StoreRowsAreKeyedAnewAndTheOthersKeepTheKeysOfTheTable(string task, string archive, int teacherStepsA2, int? samplesPerLabel, string? teacherTask)
    {
        var shipped = TeacherBuilder.LoadShipped(SharedData.RepoRoot, teacherTask ?? task, new TeacherSettings { StageA2Steps = teacherStepsA2 });
        using var teacher = shipped.Teacher;
        (MLNet.Teacher.TeacherModel, string) Shipped(string _) => shipped;
        var overrides = samplesPerLabel is int n ? new Dictionary<string, string> { ["SamplesPerLabel"] = FormattableString.Invariant($"{n}") } : [];
        var settings = Settings(Path.Combine(Temp, "keys.jsonl"), 13) with { Tasks = [task], Pipeline = HarnessSettings.PipelineWith(overrides) };
        var harness = new EvaluationHarness(settings, Shipped, _ => { });
        Dictionary<string, string> Keys(params string[] file) => new ResultsLog(Path.Combine([SharedData.RepoRoot, "docs", "evaluation", .. file])).Results
            .Where(r => r.Task == task && (r.Seed is 13 or null || r.Seed == 21 && Rows.SweptStoreSize(r.Row) == 8192))
            .GroupBy(r => r.Row).ToDictionary(g => g.Key, g => g.MaxBy(r => r.FinishedUtc)!.ConfigKey);
        var table = Keys("results.jsonl");
        var before = Keys("archive", archive);
        foreach (var row in new[] { Rows.FewShotStudent, Rows.Teacher, Rows.MlNetFeaturizeText })
            Assert.Equal(table[row], harness.ConfigKeyOf(task, row));
        // SST-2's sweeps (store size, k) and the bagged-mix row train on a store too and were measured again on the
        // mended stores; 4,096 per label is the table's own store size, which has no sweep row.
        string[] sweeps = task == "SST-2" ? [.. Rows.Sweeps.Where(r => Rows.SweptStoreSize(r) != 4096), Rows.RetriKTBagged] : [];
        // A pair's variants vary its second text since 2026-12-07 (its first before): a pair task's store rows, which all add
        // variants, are keyed anew once more and run again; SST-2's vary the same text as before and keep the table's keys.
        // MRPC's store rows were measured again with the new variants, so the table holds today's keys for them.
        bool tableHasOldKeys = global::RetriKT.Samples.Data.FewShotBenchmarks.Describe(task).Template.IsPair && task != "MRPC";
        foreach (var row in new[] { Rows.StoreOnlyStudent, Rows.RetriKT, Rows.StoreOnlyPpo, Rows.RetriKTPpo, Rows.StoreOnlyMiniLM, Rows.RetriKTMiniLM }.Concat(sweeps))
        {
            Assert.NotEqual(before[row], harness.ConfigKeyOf(task, row));
            if (tableHasOldKeys) Assert.NotEqual(table[row], harness.ConfigKeyOf(task, row));
            else Assert.Equal(table[row], harness.ConfigKeyOf(task, row));
        }
    }

    /// <summary>
    /// A second harness process on the cache of a running one stops at once with one line naming the first (a real
    /// second process: the lock is the operating system's), writes nothing, and runs once the first has let go.
    /// </summary>
    [SharedDataFact]
    public void ASecondHarnessOnTheSameCacheStopsNamingTheFirstAndRunsOnceItHasFinished()
    {
        var cache = Path.Combine(Temp, "cache");
        var results = Path.Combine(Temp, "results.jsonl");
        string[] command = ["run", "--tasks", "SST-2", "--seeds", "13", "--rows", Rows.Majority, "--cache", cache, "--results", results,
            "--report", Path.Combine(Temp, "RESULTS.md"), "--plot", Path.Combine(Temp, "plot.png")];
        using (CacheLock.Acquire(cache, "run --tasks RTE (the first process)"))
        {
            var (code, output, error) = ChildProcess.RunApp("RetriKT.Evaluation.dll", command);
            Assert.True(code == 1, $"exit code {code}; stdout: {output}; stderr: {error}");
            var line = Assert.Single(error.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
            Assert.StartsWith($"Another harness process (pid {Environment.ProcessId}, since ", line);
            Assert.Contains($" UTC: run --tasks RTE (the first process)) is using the cache {cache}; ", line);
            Assert.EndsWith("give this run its own --cache <folder> (shipped teachers are shared; a teacher built in another cache is built again there).", line);
            Assert.False(File.Exists(results));
        }
        Assert.False(File.Exists(Path.Combine(cache, CacheLock.FileName + ".owner")));
        var again = ChildProcess.RunApp("RetriKT.Evaluation.dll", command);
        Assert.True(again.Code == 0, $"exit code {again.Code}; stderr: {again.Error}");
        Assert.Single(new ResultsLog(results).Results);
    }

    /// <summary>
    /// SIGTERM (docker stop, systemd, a CI timeout) stops a run as Ctrl-C does: at the next step, with the line saying that
    /// the finished rows are kept, and exit code 130. The runtime's default ended the process at once with code 143 and
    /// not a word.
    /// </summary>
    [SharedDataFact]
    public async Task SigtermStopsARunAtTheNextRowWithOneLineAndExitCode130()
    {
        var results = Path.Combine(Temp, "results.jsonl");
        var (code, stdout, stderr) = await SigtermOnceARowRuns(["run", "--tasks", "SST-2,MRPC,RTE", "--rows", Rows.MlNetFeaturizeText,
            "--cache", Path.Combine(Temp, "cache"), "--results", results, "--report", Path.Combine(Temp, "RESULTS.md"), "--plot", Path.Combine(Temp, "plot.png")]);
        Assert.True(code == 130, $"exit code {code}\nstderr: {stderr}\nstdout: {stdout}");
        Assert.Equal("", stderr);
        Assert.EndsWith(" Cancelled; finished rows are in the results file, re-run to continue.", stdout.TrimEnd());
        // Fifteen rows were asked for; the run stopped early, and what it wrote are whole results.
        var finished = new ResultsLog(results);
        Assert.Empty(finished.Ignored);
        Assert.InRange(finished.Results.Count, 0, 14);
    }

    /// <summary>
    /// The frozen-encoder rows embedded a split in one call: BoolQ's 3,270 passages took 17 to 37 minutes without a
    /// line, and SIGTERM (or Ctrl+C) was said to cancel "after the current step" and then waited for all of it. The texts
    /// are now embedded in chunks, with the cancellation checked between them.
    /// </summary>
    [SharedDataFact]
    public async Task SigtermStopsAFrozenEncoderRowWithinAChunk()
    {
        var results = Path.Combine(Temp, "results.jsonl");
        var (code, stdout, stderr) = await SigtermOnceARowRuns(["run", "--tasks", "BoolQ", "--rows", Rows.EncoderLogRegMiniLM,
            "--cache", Path.Combine(Temp, "cache"), "--results", results, "--report", Path.Combine(Temp, "RESULTS.md"), "--plot", Path.Combine(Temp, "plot.png")]);
        Assert.True(code == 130, $"exit code {code}\nstderr: {stderr}\nstdout: {stdout}");
        Assert.EndsWith(" Cancelled; finished rows are in the results file, re-run to continue.", stdout.TrimEnd());
        Assert.False(File.Exists(results));
    }

    /// <summary>
    /// probe scores the teacher six times over up to 2,000 rows (minutes on SST-2, more on BoolQ's passages): SIGTERM
    /// (or Ctrl+C) said "Cancelling after the current step" and then waited for every pass, and the probe ended with exit
    /// code 0. It now stops before the teacher's next forward pass, with exit code 130.
    /// </summary>
    [SharedDataFact]
    public async Task SigtermStopsAProbeWithExitCode130()
    {
        var (code, stdout, stderr) = await SigtermOnceARowRuns(["probe", "--tasks", "SST-2", "--cache", Path.Combine(Temp, "cache")], startedLine: "Probe of ");
        Assert.True(code == 130, $"exit code {code}\nstderr: {stderr}\nstdout: {stdout}");
        Assert.EndsWith(" Cancelled; re-run to resume from the last checkpoint.", stdout.TrimEnd());
    }

    /// <summary>
    /// Starts the harness, sends SIGTERM once a row is running (or <paramref name="startedLine"/> is printed), and waits at
    /// most 60 s for it to end: its exit code and output.
    /// </summary>
    private static async Task<(int Code, string Stdout, string Stderr)> SigtermOnceARowRuns(string[] command, string startedLine = ": running (")
    {
        using var process = ChildProcess.Start("RetriKT.Evaluation.dll", command);
        var output = new System.Text.StringBuilder();
        var running = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        process.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null) return;
            lock (output) output.AppendLine(e.Data);
            if (e.Data.Contains(startedLine, StringComparison.Ordinal)) running.TrySetResult();
        };
        process.BeginOutputReadLine();
        var error = process.StandardError.ReadToEndAsync();
        try
        {
            if (await Task.WhenAny(running.Task, Task.Delay(TimeSpan.FromSeconds(60))) != running.Task)
                Assert.Fail($"no '{startedLine}' within 60 s; output:\n{output}");
            ChildProcess.Signal(process, "TERM");
            var exited = process.WaitForExitAsync();
            if (await Task.WhenAny(exited, Task.Delay(TimeSpan.FromSeconds(60))) != exited)
                Assert.Fail($"still running 60 s after SIGTERM; output:\n{output}");
        }
        finally
        {
            if (!process.HasExited) process.Kill(entireProcessTree: true);
        }
        await process.WaitForExitAsync();
        var stderr = await error;
        lock (output) return (process.ExitCode, output.ToString(), stderr);
    }

    [SharedDataFact]
    public void MlNetBaselineRowNeedsNoTeacherAndReproducesTheReferenceNumber()
    {
        var results = Path.Combine(Temp, "mlnet.jsonl");
        (MLNet.Teacher.TeacherModel, string) NoTeacher(string task) => throw new InvalidOperationException("the ML.NET baseline must not load a teacher");
        var settings = Settings(results, 13) with { Tasks = ["SST-2"], Rows = [Rows.MlNetFeaturizeText] };
        Assert.Equal((1, 0), new EvaluationHarness(settings, NoTeacher, _ => { }).Run());
        var row = Assert.Single(new ResultsLog(results).Results);
        // FeaturizeText + LbfgsMaximumEntropy (l1 0, l2 0.01) on SST-2 16-shot seed 13 scored 57.9 % when measured by hand.
        Assert.InRange(row.Accuracy, 0.574, 0.584);
        Assert.Equal(872, row.TestRows);
    }

    /// <summary>
    /// The harness sets the store corpus of each row itself (the corpus rows have it, no other row does): a --set of it
    /// was overwritten for every row, so the rows ran (or were skipped as already measured) without it, under the keys of
    /// the rows without a corpus. It is refused, naming the rows that add the corpus.
    /// </summary>
    [SharedDataFact]
    public void ASetOfTheStoreCorpusIsRefusedNamingTheRowsThatUseIt()
    {
        var corpus = SharedData.Path("data", "corpora", "movie-reviews-polarity-v2");
        foreach (var (field, value) in new[] { ("StoreCorpus", corpus), ("StoreCorpusAfterTraining", "true") })
        {
            var e = Assert.Throws<ArgumentException>(() => HarnessSettings.PipelineWith(new Dictionary<string, string> { [field] = value }));
            Assert.Equal($"--set {field}={value}: the harness sets {field} per row; use --rows corpus-student, retrikt-corpus or retrikt-grown instead.", e.Message);
        }
    }

    [Fact]
    public void EveryRowHasATitleAndSweepsAreKnownButNotDefault()
    {
        Assert.Contains(Rows.StoreOnlyStudent, Rows.All);
        Assert.Contains(Rows.MlNetFeaturizeText, Rows.All);
        Assert.All(Rows.All.Concat(Rows.Sweeps).Concat(Rows.Experiments), r => Assert.NotEqual(r, Rows.Title(r)));
        Assert.All(Rows.Experiments, r => Assert.True(Rows.IsKnown(r) && !Rows.All.Contains(r)));
        // The PPO store's no-retrieval pair: trained without retrieval, on the store the PPO settings make.
        Assert.True(Rows.IsWithoutRetrieval(Rows.StoreOnlyPpo) && Rows.UsesPpo(Rows.StoreOnlyPpo) && Rows.UsesPpo(Rows.RetriKTPpo));
        Assert.False(Rows.IsWithoutRetrieval(Rows.RetriKTPpo) || Rows.UsesPpo(Rows.StoreOnlyStudent) || Rows.UsesPpo(Rows.RetriKT));
        Assert.All(Rows.Sweeps, r => Assert.True(Rows.IsKnown(r) && !Rows.All.Contains(r)));
        // Each pretrained-encoder pair: the same student with and without retrieval.
        Assert.True(Rows.IsWithoutRetrieval(Rows.StoreOnlyMlm) && Rows.IsWithoutRetrieval(Rows.StoreOnlyMiniLM));
        Assert.False(Rows.IsWithoutRetrieval(Rows.RetriKTMlm) || Rows.IsWithoutRetrieval(Rows.RetriKTMiniLM) || Rows.IsWithoutRetrieval(Rows.FewShotMlm));
        Assert.True(Rows.UsesTinyEncoder(Rows.FewShotMlm) && Rows.UsesTinyEncoder(Rows.StoreOnlyMlm) && Rows.UsesTinyEncoder(Rows.RetriKTMlm));
        Assert.False(Rows.UsesTinyEncoder(Rows.FewShotStudent) || Rows.UsesTinyEncoder(Rows.RetriKTMiniLM));
        Assert.False(Rows.IsKnown("retrikt-typo"));
        var o = HarnessSettings.PipelineWith(new Dictionary<string, string> { ["SamplesPerLabel"] = "256", ["StudentCharacterPieces"] = "true" });
        Assert.Equal(256, o.SamplesPerLabel);
        Assert.True(o.StudentCharacterPieces);
        var e = Assert.Throws<ArgumentException>(() => HarnessSettings.PipelineWith(new Dictionary<string, string> { ["SamplesPerLabell"] = "1" }));
        Assert.Contains("SamplesPerLabell", e.Message);
        // Enums by name only; a number or a misspelling names the choices.
        Assert.Equal(MLNet.Student.MixSelection.BootstrapAverage,
            HarnessSettings.PipelineWith(new Dictionary<string, string> { ["StudentMixSelection"] = "BootstrapAverage" }).StudentMixSelection);
        foreach (var bad in new[] { "1", "bootstrapaverage" })
        {
            var badEnum = Assert.Throws<ArgumentException>(() => HarnessSettings.PipelineWith(new Dictionary<string, string> { ["StudentMixSelection"] = bad }));
            Assert.Contains("expected a MixSelection (LowestNll, BootstrapAverage, HighestAccuracy)", badEnum.Message);
        }
        // A value the pipeline would refuse once built, after the store's extraction: refused as the flags are read.
        var oddWidth = Assert.Throws<ArgumentException>(() => HarnessSettings.PipelineWith(new Dictionary<string, string> { ["StudentHiddenSize"] = "30" }));
        Assert.Equal("--set: StudentHiddenSize must be a positive multiple of the student's 4 attention heads, found 30.", oddWidth.Message);
    }

    [Fact]
    public void TheEvaluatedRecipeIsTheOneTheResultsWereMeasuredWith()
    {
        // Every tiny-student row of docs/RESULTS.md is keyed on this JSON (with the teacher's hash): a changed value here
        // re-keys, and so reruns, the whole table. Change it on purpose, with the rows.
        var json = System.Text.Json.JsonSerializer.Serialize(MLNet.Pipeline.RetriKTPipelineOptions.EvaluatedRecipe(),
            new System.Text.Json.JsonSerializerOptions { IncludeFields = true });
        Assert.Equal(string.Concat(
            "{\"PromptTokens\":8,\"SupervisedEpochs\":10,\"PpoSteps\":0,\"RolloutsPerStep\":16,\"SamplesPerLabel\":4096,",
            "\"ExtractionBatchSize\":64,\"MaxAttemptsFactor\":3,\"FidelityThreshold\":0.5,\"RequireArgmax\":true,",
            "\"AssignToTeacherLabel\":true,\"MaxNewTokens\":null,\"StudentEpochs\":30,\"StudentHiddenSize\":48,",
            "\"StudentLayers\":2,\"StudentMaxLength\":128,\"StudentNeighborCount\":16,\"StudentFeedForwardSize\":96,",
            "\"StudentMaxVocabulary\":1400,\"StudentCharacterPieces\":false,\"StudentTokenDropout\":0.2,",
            "\"StudentRetrievalLossWeight\":0,\"TuneOnFewShotDev\":true,\"StoreValidationShare\":0.1,",
            "\"StudentEarlyStoppingPatience\":3,\"StudentSelectEpochOnHead\":true,\"StoreVariantsPerSample\":2,",
            "\"CalibrateVerbalizer\":true,\"StudentEmbeddingsFromTeacher\":true,\"StudentEmbeddingRank\":16,\"Seed\":1,",
            "\"WorkDirectory\":null,\"ReplaceMismatchedCheckpoint\":true,\"PpoMetricsCsvPath\":null,",
            "\"StudentSaveStoreTexts\":false,\"StudentNeighborsColumnName\":null}"), json);
        Assert.Equal(json, System.Text.Json.JsonSerializer.Serialize(HarnessSettings.DefaultPipeline(), new System.Text.Json.JsonSerializerOptions { IncludeFields = true }));
    }

    [Fact]
    public void OptionsAddedLaterLeaveTheOptionsJsonAsItWasUntilTheyAreSet()
    {
        // Result keys hash this JSON: options added later must not change the key of every row measured before them.
        var json = new System.Text.Json.JsonSerializerOptions { IncludeFields = true };
        var plain = System.Text.Json.JsonSerializer.Serialize(HarnessSettings.DefaultPipeline(), json);
        Assert.DoesNotContain("StudentTrainableBackboneLayers", plain);
        Assert.DoesNotContain("StudentMixSelection", plain);
        Assert.DoesNotContain("StudentBackboneLearningRate", plain);
        Assert.DoesNotContain("FewShotDevTuningShare", plain);
        // Null (the default rule after growth) is left out; a rule named is written, as the retrikt-grown rows name it.
        Assert.DoesNotContain("StoreCorpusMixSelection", plain);
        var tuned = HarnessSettings.DefaultPipeline();
        (tuned.StudentTrainableBackboneLayers, tuned.StudentBackboneLearningRate, tuned.FewShotDevTuningShare) = (2, 5e-4, 1);
        tuned.StoreCorpusMixSelection = MLNet.Student.MixSelection.HighestAccuracy;
        var set = System.Text.Json.JsonSerializer.Serialize(tuned, json);
        Assert.Contains("\"StoreCorpusMixSelection\":2", set);
        Assert.Contains("\"StudentTrainableBackboneLayers\":2", set);
        Assert.Contains("\"StudentBackboneLearningRate\":0.0005", set);
        Assert.Contains("\"FewShotDevTuningShare\":1", set);
        // The tuning corpus is a path (keyed by the harness by its folder name); its row count and the paired student only when set.
        var library = System.Text.Json.JsonSerializer.Serialize(new MLNet.Pipeline.RetriKTPipelineOptions { TuningCorpus = "/data/corpora/x" }, json);
        Assert.DoesNotContain("TuningCorpus", library);
        Assert.DoesNotContain("StudentSelectEpochOnHead", library);
        Assert.Contains("\"StudentSelectEpochOnHead\":true", plain);
        Assert.Contains("\"StudentRetrievalLossWeight\":0", plain);
    }

    [Fact]
    public void OnlyTheRowsThatTrainOnAStoreAreStoreStudents()
    {
        Assert.All(new[] { Rows.StoreOnlyStudent, Rows.RetriKT, Rows.RetriKTPpo, Rows.StoreOnlyPpo, Rows.StoreSweepPrefix + "512", Rows.NeighborSweepPrefix + "4" },
            r => Assert.True(Rows.TrainsOnStore(r), r));
        Assert.All(new[] { Rows.Majority, Rows.MlNetFeaturizeText, Rows.FewShotStudent, Rows.FewShotMlm, Rows.Teacher, Rows.EncoderLogRegMiniLM },
            r => Assert.False(Rows.TrainsOnStore(r), r));
    }

    /// <summary>
    /// A run record's machine names the CPU's flag set by a hash: two machines whose name, family and model read the same
    /// but whose hypervisors expose other instructions are told apart (kernels chosen by those flags move PPO), and the
    /// kernel's order and spacing of the list do not matter.
    /// </summary>
    [Fact]
    public void TheRunRecordsMachineTellsCpusApartByTheirFlags()
    {
        string Machine(string? flags)
        {
            var path = Path.Combine(Temp, $"cpuinfo-{Guid.NewGuid():N}");
            File.WriteAllText(path, "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\nmodel\t\t: 2\nmodel name\t: AMD EPYC\n" +
                (flags is null ? "" : $"flags\t\t: {flags}\n") + "\nprocessor\t: 1\nflags\t\t: other\n");
            return RunLog.Machine(path);
        }
        string plain = Machine("fpu sse2 avx2 avx512f");
        Assert.Matches(@"^AMD EPYC \(family 26 model 2\), CPU flags [0-9a-f]{8}, ", plain);
        Assert.Equal(plain, Machine("avx512f  fpu avx2 sse2"));
        Assert.NotEqual(plain, Machine("fpu sse2 avx2 avx512f avx512_bf16"));
        Assert.StartsWith("AMD EPYC (family 26 model 2), ", Machine(null));
        Assert.DoesNotContain("CPU flags", Machine(null));
    }

    [Fact]
    public void RepeatedSetOptionsAddUpAndAnyOtherRepeatedOptionFails()
    {
        var o = Cli.Parse(["--set", "SamplesPerLabel=128", "--set", "StudentEpochs=5", "--ppo-steps", "3", "--ppo-rate", "0.01", "--ppo-rollouts", "32"], Temp);
        Assert.Equal("128", o.PipelineOverrides["SamplesPerLabel"]);
        Assert.Equal("5", o.PipelineOverrides["StudentEpochs"]);
        Assert.Equal((3, 0.01, 32), (o.PpoSteps, o.PpoLearningRate, o.PpoRolloutsPerStep));
        var defaults = Cli.Parse([], Temp);
        Assert.Equal((20, 0.03, 64), (defaults.PpoSteps, defaults.PpoLearningRate, defaults.PpoRolloutsPerStep));
        // The harness sets the PPO row's fields itself: a --set of one of them would be overwritten without a word.
        foreach (var (field, option) in new[] { ("PpoSteps", "--ppo-steps"), ("PpoLearningRate", "--ppo-rate"), ("RolloutsPerStep", "--ppo-rollouts") })
        {
            var overwritten = Assert.Throws<ArgumentException>(() => HarnessSettings.PipelineWith(new Dictionary<string, string> { [field] = "1" }));
            Assert.Equal($"--set {field}=1: the harness sets {field} per row; use {option} instead.", overwritten.Message);
        }
        var e = Assert.Throws<ArgumentException>(() => Cli.Parse(["--seeds", "13", "--seeds", "21"], Temp));
        Assert.Contains("--seeds is given twice ('13', '21')", e.Message);
    }

    /// <summary>The PPO options set the PPO rows only: given with --rows that has none, they were taken and changed nothing.</summary>
    [Fact]
    public void PpoOptionsWithRowsWithoutPpoAreRefused()
    {
        foreach (var option in new[] { "--ppo-steps", "--ppo-rate", "--ppo-rollouts" })
        {
            var e = Assert.Throws<ArgumentException>(() => Cli.Parse(["--rows", "majority,retrikt", option, "5"], Temp));
            Assert.Equal($"{option} sets the rows retrikt-ppo and store-only-ppo, and --rows has neither.", e.Message);
        }
        Assert.Equal(5, Cli.Parse(["--rows", "retrikt,store-only-ppo", "--ppo-steps", "5"], Temp).PpoSteps);
    }

    /// <summary>
    /// The teacher, probe and report verbs read some of the options: another (report --rows, teacher --set, probe --seeds)
    /// was taken and changed nothing, as were the teacher-building options beside --teacher, when no teacher is built.
    /// </summary>
    [Fact]
    public void AnOptionTheVerbDoesNotReadIsRefused()
    {
        foreach (var (verb, args, expected) in new (string, string[], string)[]
        {
            ("report", ["--rows", "majority"], "--rows is not read by the report verb, which takes --results, --report, --plot."),
            ("teacher", ["--set", "SamplesPerLabel=128"], "--set is not read by the teacher verb, which takes --data, --tasks, --cache, --shipped-teachers, --teacher-steps-a,"),
            ("probe", ["--seeds", "13"], "--seeds is not read by the probe verb, which takes --data, --tasks, --teacher, --cache,"),
            ("run", ["--teacher", Temp, "--teacher-steps-a", "10"], "--teacher-steps-a sets how a stand-in teacher is built, and with --teacher none is built."),
            ("probe", ["--teacher-dropout", "0.1", "--teacher", Temp], "--teacher-dropout sets how a stand-in teacher is built, and with --teacher none is built."),
        })
            Assert.StartsWith(expected, Assert.Throws<ArgumentException>(() => Cli.Parse(args, Temp, verb)).Message);
        Assert.Equal(0.1, Cli.Parse(["--teacher-dropout", "0.1", "--tasks", "SST-2"], Temp, "teacher").Teacher.StageBDropout);
        Assert.EndsWith("r.md", Cli.Parse(["--report", Path.Combine(Temp, "r.md")], Temp, "report").ReportPath);
        // An option no verb reads is still named as unknown.
        Assert.StartsWith("Unknown option(s): --rowz", Assert.Throws<ArgumentException>(() => Cli.Parse(["--rowz", "x"], Temp, "report")).Message);
    }

    /// <summary>
    /// An empty value (<c>--teacher "$TEACHER"</c> with the variable unset) names its option; a path option said only "The value
    /// cannot be an empty string. (Parameter 'path')", and an empty --tasks or --rows was "Unknown task ''".
    /// </summary>
    [Theory]
    [InlineData("--teacher")]
    [InlineData("--data")]
    [InlineData("--cache")]
    [InlineData("--results")]
    [InlineData("--tasks")]
    public void AnEmptyOptionValueNamesTheOption(string option) =>
        Assert.Equal($"Option {option} has an empty value.", Assert.Throws<ArgumentException>(() => Cli.Parse([option, " "], Temp)).Message);

    /// <summary>The harness as a user runs it (a real process): a bad --set is one line and exit code 2, before any teacher is loaded.</summary>
    [Theory]
    [InlineData("SamplesPerLabell=1", "--set: RetriKTPipelineOptions has no field 'SamplesPerLabell'.")]
    [InlineData("StudentHiddenSize=30", "--set: StudentHiddenSize must be a positive multiple of the student's 4 attention heads, found 30.")]
    [InlineData("StudentEmbeddingRank=64", "--set: StudentEmbeddingRank (64) must be at most StudentHiddenSize (48).")]
    [InlineData("DefaultStoreCorpusRows=5", "--set: RetriKTPipelineOptions has no field 'DefaultStoreCorpusRows'.")] // a constant: it crashed setting it
    public void ABadSetOptionIsOneLineAndExitCodeTwo(string set, string expected)
        => AssertRefused(["run", "--tasks", "SST-2", "--seeds", "13", "--set", set, "--results", Path.Combine(Temp, "results.jsonl")], expected);

    /// <summary>
    /// A number option that is not a number, or one out of its range, is one line and exit code 2 before any work: a word
    /// once ended the harness with a FormatException's stack trace, and a dropout of 1.5 was taken and failed the teacher's
    /// build after its hours of stage A.
    /// </summary>
    [Theory]
    [InlineData("--ppo-rate", "abc", "--ppo-rate must be a number above 0, found 'abc'.")]
    [InlineData("--ppo-rate", "0", "--ppo-rate must be a number above 0, found '0'.")]
    [InlineData("--teacher-rate-a2", "NaN", "--teacher-rate-a2 must be a number above 0, found 'NaN'.")]
    [InlineData("--teacher-dropout", "1.5", "--teacher-dropout must be a number from 0 up to (not including) 1, found '1.5'.")]
    [InlineData("--teacher-dropout", "0,1", "--teacher-dropout must be a number from 0 up to (not including) 1, found '0,1'.")]
    [InlineData("--teacher-label-first", "-0.5", "--teacher-label-first must be a number from 0 to 1, found '-0.5'.")]
    [InlineData("--ppo-rollouts", "0", "--ppo-rollouts must be a positive integer.")]
    public void ANumberOptionThatIsNoNumberOrOutOfRangeIsOneLineAndExitCodeTwo(string option, string value, string expected)
        => AssertRefused(["run", "--tasks", "SST-2", "--seeds", "13", option, value, "--results", Path.Combine(Temp, "results.jsonl"),
            "--report", Path.Combine(Temp, "RESULTS.md"), "--plot", Path.Combine(Temp, "plot.png"), "--cache", Path.Combine(Temp, "cache")], expected);

    /// <summary>
    /// A results, report or plot path that is a folder is one line and exit code 2 before any row runs: the harness used to
    /// run the row (hours, for a store row) and then end with a stack trace where it wrote the result or the report.
    /// </summary>
    [SharedDataTheory]
    [InlineData("--results")]
    [InlineData("--report")]
    [InlineData("--plot")]
    public void AnOutputPathThatIsAFolderIsOneLineAndExitCodeTwoBeforeAnyRow(string option)
    {
        var folder = Directory.CreateDirectory(Path.Combine(Temp, "a-folder")).FullName;
        var paths = new Dictionary<string, string>
        {
            ["--results"] = Path.Combine(Temp, "results.jsonl"), ["--report"] = Path.Combine(Temp, "RESULTS.md"), ["--plot"] = Path.Combine(Temp, "plot.png"),
        };
        paths[option] = folder;
        AssertRefused(["run", "--tasks", "SST-2", "--seeds", "13", "--rows", Rows.Majority, "--cache", Path.Combine(Temp, "cache"),
            ..paths.SelectMany(p => new[] { p.Key, p.Value })], $"{option} '{folder}' is a folder; expected a file");
        Assert.Empty(Directory.EnumerateFileSystemEntries(folder));
    }

    /// <summary>
    /// --results and --report naming one file: the rows ran, their results were appended to it, and the report was then
    /// written over them, so every result was lost with exit code 0 (and the next run warned about each markdown line and
    /// ran every row again). Two outputs on one file are one line and exit code 2 before any row runs.
    /// </summary>
    [Fact]
    public void TwoOutputsOnOneFileAreOneLineAndExitCodeTwoBeforeAnyRow()
    {
        var results = Path.Combine(Temp, "results.jsonl");
        AssertRefused(["run", "--tasks", "SST-2", "--seeds", "13", "--rows", Rows.Majority, "--cache", Path.Combine(Temp, "cache"),
            "--results", results, "--report", results, "--plot", Path.Combine(Temp, "plot.png")],
            $"--results and --report are the same file '{results}'; each needs its own.");
        var runs = Path.Combine(Temp, "runs.jsonl");
        AssertRefused(["report", "--results", runs, "--report", Path.Combine(Temp, "RESULTS.md"), "--plot", Path.Combine(Temp, "plot.png")],
            $"--results and the run records beside --results are the same file '{runs}'; each needs its own.");
    }

    /// <summary>
    /// The teacher verb builds the stand-in teachers: a --teacher given to it was ignored, and a teacher built (hours of
    /// CPU) without a word. It is refused before any work, naming the verbs that take it.
    /// </summary>
    [Fact]
    public void TheTeacherVerbRefusesAGivenTeacher()
    {
        var given = Path.Combine(Temp, "teacher.bin");
        File.WriteAllBytes(given, new byte[10]);
        AssertRefused(["teacher", "--tasks", "SST-2", "--teacher", given, "--cache", Path.Combine(Temp, "cache"), "--shipped-teachers", Path.Combine(Temp, "none")],
            "--teacher gives the teacher that run and probe use; the teacher verb builds the stand-in teachers instead (leave --teacher out, or run probe with it).");
        Assert.False(Directory.Exists(Path.Combine(Temp, "cache")));
    }

    /// <summary>A report that cannot be written (its folder is a file) is one line and exit code 1; it was a stack trace.</summary>
    [Fact]
    public void AReportThatCannotBeWrittenIsOneLineAndExitCodeOne()
    {
        var results = Path.Combine(Temp, "results.jsonl");
        File.WriteAllText(results, "");
        var aFile = Path.Combine(Temp, "a-file");
        File.WriteAllText(aFile, "");
        var (code, _, error) = ChildProcess.RunApp("RetriKT.Evaluation.dll",
            ["report", "--results", results, "--report", Path.Combine(aFile, "RESULTS.md"), "--plot", Path.Combine(Temp, "plot.png")]);
        Assert.True(code == 1, $"exit code {code}; stderr: {error}");
        var line = Assert.Single(error.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith($"The report could not be written ({Path.Combine(aFile, "RESULTS.md")}, plot {Path.Combine(Temp, "plot.png")}): ", line);
    }

    /// <summary>
    /// A data file the user cannot read, or a cache folder they cannot create, is one line and exit code 1, as a missing
    /// one is; both were an unhandled <see cref="UnauthorizedAccessException"/> with its stack trace.
    /// </summary>
    [SharedDataFact]
    public void AnUnreadableDataFileOrUnwritableCacheIsOneLineAndExitCodeOne()
    {
        var shots = Path.Combine(Temp, "data", "SST-2", "k-shot");
        Directory.CreateDirectory(Path.Combine(shots, "16-13"));
        File.Copy(SharedData.Path("data", "SST-2", "k-shot", "16-13", "dev.tsv"), Path.Combine(shots, "16-13", "dev.tsv"));
        File.Copy(SharedData.Path("data", "SST-2", "k-shot", "test.tsv"), Path.Combine(shots, "test.tsv"));
        var train = Path.Combine(shots, "16-13", "train.tsv");
        UnreadableFile.Create(train);
        string[] Run(string data, string cache) =>
            ["run", "--data", data, "--tasks", "SST-2", "--seeds", "13", "--rows", Rows.Majority, "--cache", cache,
             "--results", Path.Combine(Temp, "results.jsonl"), "--report", Path.Combine(Temp, "RESULTS.md"), "--plot", Path.Combine(Temp, "plot.png")];
        AssertFailed(Run(Path.Combine(Temp, "data"), Path.Combine(Temp, "cache")), $"Access to the path '{train}' is denied.");
        // /sys refuses a new folder to root as well (EPERM), as a folder without write permission does to its user.
        const string unwritable = "/sys/retrikt-harness-cache";
        Assert.Throws<UnauthorizedAccessException>(() => Directory.CreateDirectory(unwritable));
        foreach (var verb in new[] { "run", "teacher" })
            AssertFailed(verb == "run" ? Run(SharedData.Path("data"), unwritable) : ["teacher", "--tasks", "SST-2", "--cache", unwritable],
                $"Access to the path '{unwritable}' is denied.");

        static void AssertFailed(string[] arguments, string expected)
        {
            var (code, _, error) = ChildProcess.RunApp("RetriKT.Evaluation.dll", arguments);
            Assert.True(code == 1, $"{string.Join(' ', arguments)}: exit code {code}; stderr: {error}");
            Assert.Equal(expected, Assert.Single(error.Split('\n', StringSplitOptions.RemoveEmptyEntries)));
        }
    }

    /// <summary>
    /// A --teacher the loader cannot take (an encoder's folder, a model type it does not support) is one line naming it and
    /// exit code 1, as a damaged checkpoint is; run and probe ended with the loader's NotSupportedException and its stack trace.
    /// </summary>
    [SharedDataFact]
    public void ATeacherOfAnUnsupportedModelTypeIsOneLineAndExitCodeOne()
    {
        var bert = SharedData.Path("models", "hf-tiny-random-bert");
        foreach (var arguments in new[]
        {
            new[] { "probe", "--tasks", "SST-2", "--teacher", bert, "--cache", Path.Combine(Temp, "cache") },
            ["run", "--tasks", "SST-2", "--seeds", "13", "--rows", Rows.Teacher, "--teacher", bert, "--cache", Path.Combine(Temp, "cache"),
             "--results", Path.Combine(Temp, "results.jsonl"), "--report", Path.Combine(Temp, "RESULTS.md"), "--plot", Path.Combine(Temp, "plot.png")],
        })
        {
            var (code, _, error) = ChildProcess.RunApp("RetriKT.Evaluation.dll", arguments);
            Assert.True(code == 1, $"{arguments[0]}: exit code {code}; stderr: {error}");
            Assert.Equal($"{bert} is not a loadable teacher checkpoint (a Hugging Face model directory or a llama2.c .bin): " +
                         $"{Path.Combine(bert, "config.json")}: model_type 'bert' is not supported; expected one of llama, mistral, qwen2, gpt2.",
                Assert.Single(error.Split('\n', StringSplitOptions.RemoveEmptyEntries)));
        }
    }

    /// <summary>A results file report cannot read is one line and exit code 1 (it was an UnauthorizedAccessException's stack trace); no report is written.</summary>
    [Fact]
    public void AnUnreadableResultsFileIsOneLineAndExitCodeOneOnReport()
    {
        var results = Path.Combine(Temp, "results.jsonl");
        UnreadableFile.Create(results);
        var report = Path.Combine(Temp, "RESULTS.md");
        var (code, _, error) = ChildProcess.RunApp("RetriKT.Evaluation.dll", ["report", "--results", results, "--report", report, "--plot", Path.Combine(Temp, "plot.png")]);
        Assert.True(code == 1, $"exit code {code}; stderr: {error}");
        Assert.Equal($"The results could not be read: Access to the path '{results}' is denied.", Assert.Single(error.Split('\n', StringSplitOptions.RemoveEmptyEntries)));
        Assert.False(File.Exists(report));
    }

    /// <summary>A teacher or results file that is not there: refused before any work, and a report is not rewritten empty.</summary>
    [Fact]
    public void AMissingTeacherOrResultsFileIsOneLineAndExitCodeTwo()
    {
        var missing = Path.Combine(Temp, "no-teacher.bin");
        AssertRefused(["probe", "--tasks", "SST-2", "--teacher", missing], $"--teacher '{missing}' does not exist");
        AssertRefused(["run", "--tasks", "SST-2", "--teacher", missing, "--results", Path.Combine(Temp, "results.jsonl")], $"--teacher '{missing}' does not exist");
        var report = Path.Combine(Temp, "RESULTS.md");
        AssertRefused(["report", "--results", Path.Combine(Temp, "typo.jsonl"), "--report", report, "--plot", Path.Combine(Temp, "plot.png")],
            $"--results '{Path.Combine(Temp, "typo.jsonl")}' does not exist; report rewrites the tables from it.");
        Assert.False(File.Exists(report));
    }

    /// <summary>
    /// report keeps what follows the hand-written marker; an existing report without the marker (a report path given by
    /// mistake, or a marker line edited away) would lose all of it: refused before anything is written, file unchanged.
    /// </summary>
    [SharedDataFact]
    public void AReportWithoutTheHandWrittenMarkerIsNotOverwritten()
    {
        var results = Path.Combine(Temp, "results.jsonl");
        new ResultsLog(results).Append(new RowResult { Task = "SST-2", Seed = 13, Row = Rows.Majority, ConfigKey = "none", Accuracy = 0.5092, MacroF1 = 0.3374, TestRows = 872 });
        var report = Path.Combine(Temp, "RESULTS.md");
        const string notes = "# My analysis\n\nHours of hand-written notes, no marker line.\n";
        File.WriteAllText(report, notes);
        var (code, _, error) = ChildProcess.RunApp("RetriKT.Evaluation.dll", ["report", "--results", results, "--report", report, "--plot", Path.Combine(Temp, "plot.png")]);
        Assert.True(code == 2, $"exit code {code}; stderr: {error}");
        Assert.StartsWith($"{report}: the existing report has no line '<!-- hand-written notes below", error);
        Assert.Equal(notes, File.ReadAllText(report));

        // With the marker above the notes they are kept, byte for byte, and a second report changes nothing.
        File.WriteAllText(report, "old tables\n<!-- hand-written notes below are kept when the report is regenerated -->\n\n" + notes);
        for (int i = 0; i < 2; i++)
        {
            (code, _, error) = ChildProcess.RunApp("RetriKT.Evaluation.dll", ["report", "--results", results, "--report", report, "--plot", Path.Combine(Temp, "plot.png")]);
            Assert.True(code == 0, $"exit code {code}; stderr: {error}");
            Assert.EndsWith("<!-- hand-written notes below are kept when the report is regenerated -->\n\n" + notes, File.ReadAllText(report).ReplaceLineEndings("\n"));
        }
    }

    /// <summary>
    /// A seed that has no LM-BFF split is a bad option (exit code 2, before any work); it ended with exit code 1 once the
    /// run looked for the split's folder, as a missing data folder does.
    /// </summary>
    [Fact]
    public void ASeedWithoutASplitIsOneLineAndExitCodeTwo()
        => AssertRefused(["run", "--tasks", "SST-2", "--seeds", "13,7", "--rows", Rows.Majority, "--results", Path.Combine(Temp, "results.jsonl"),
            "--report", Path.Combine(Temp, "RESULTS.md"), "--plot", Path.Combine(Temp, "plot.png"), "--cache", Path.Combine(Temp, "cache")],
            "--seeds: 7 is not an LM-BFF seed (13, 21, 42, 87, 100).");

    /// <summary>
    /// A task the data has but the harness's table does not (CoLA, QNLI) is refused before any work: its rows ran, went
    /// into the results file and were left out of the report's table without a word.
    /// </summary>
    [SharedDataFact]
    public void ATaskOutsideTheTableIsOneLineAndExitCodeTwo()
        => AssertRefused(["run", "--tasks", "SST-2,CoLA", "--seeds", "13", "--rows", Rows.Majority, "--results", Path.Combine(Temp, "results.jsonl"),
            "--report", Path.Combine(Temp, "RESULTS.md"), "--plot", Path.Combine(Temp, "plot.png"), "--cache", Path.Combine(Temp, "cache")],
            "Unknown task 'CoLA'. Known: SST-2, MRPC, RTE, CB, BoolQ.");

    /// <summary>A --tasks or --rows that names nothing (<c>--rows "$ROWS,"</c> with the variable unset) is refused; the run did nothing and said "Done".</summary>
    [Theory]
    [InlineData("--tasks")]
    [InlineData("--rows")]
    public void AListOptionThatNamesNothingIsOneLineAndExitCodeTwo(string option)
        => AssertRefused(["run", "--seeds", "13", option, " , ", "--results", Path.Combine(Temp, "results.jsonl"),
            "--report", Path.Combine(Temp, "RESULTS.md"), "--plot", Path.Combine(Temp, "plot.png"), "--cache", Path.Combine(Temp, "cache")],
            $"{option} is empty.");

    /// <summary>A field given twice in --set names the field and both values; it was the dictionary's "An item with the same key has already been added".</summary>
    [Fact]
    public void AFieldSetTwiceIsNamedWithBothValues()
    {
        foreach (var args in new[] { new[] { "--set", "SamplesPerLabel=128,SamplesPerLabel=256" }, ["--set", "SamplesPerLabel=128", "--set", "SamplesPerLabel=256"] })
            Assert.Equal("--set SamplesPerLabel is given twice ('128', '256'); give it once.", Assert.Throws<ArgumentException>(() => Cli.Parse(args, Temp)).Message);
    }

    private void AssertRefused(string[] arguments, string expected)
    {
        var (code, _, error) = ChildProcess.RunApp("RetriKT.Evaluation.dll", arguments);
        Assert.True(code == 2, $"exit code {code}; stderr: {error}");
        Assert.StartsWith(expected, error);
        Assert.DoesNotContain("   at ", error);
        Assert.False(File.Exists(Path.Combine(Temp, "results.jsonl")));
    }

    [Fact]
    public void LabelFirstStageBIsKeyedOnlyWhenUsedAndRendersTheLabelBeforeTheText()
    {
        var plain = new TeacherSettings();
        // The label-first share is a stage-B setting: stage A's build folder is shared, and at 0 the key is the one every
        // teacher built before the setting existed had.
        Assert.Equal(plain.CacheKey("SST-2"), (plain with { StageBLabelFirst = 0.5 }).CacheKey("SST-2"));
        Assert.Equal("b571c2e0fbf72ab5", (plain with { StageA2Steps = 0 }).StageBKey()); // the 78.9 % teacher's, built before the second pass
        Assert.Equal("6be68ac93f252864", plain.StageBKey()); // the shipped 82.1 % teacher's (samples/RetriKT.Evaluation/teachers)
        Assert.NotEqual(plain.StageBKey(), (plain with { StageBLabelFirst = 0.5 }).StageBKey());
        var (sst2, _) = RetriKT.Samples.Data.FewShotBenchmarks.Describe("SST-2");
        Assert.Equal("great: a delight", TeacherBuilder.LabelFirstText(sst2, "a delight", null, "1"));
        Assert.Equal("terrible: a mess", TeacherBuilder.LabelFirstText(sst2, "a mess", null, "0"));
    }

    [Fact]
    public void ReportAggregatesMeanAndSampleStandardDeviation()
    {
        var (mean, sd, n) = ResultsReport.Stats([0.8, 0.9, 1.0]);
        Assert.Equal(0.9, mean, 9);
        Assert.Equal(0.1, sd, 9);
        Assert.Equal(3, n);
        Assert.Equal(0, ResultsReport.Stats([0.7]).Sd);
    }

    [Fact]
    public void PairedLineComparesTwoRowsOnTheSeedsBothHave()
    {
        RowResult R(string row, int seed, double accuracy) => new() { Task = "SST-2", Seed = seed, Row = row, Accuracy = accuracy };
        var results = new List<RowResult>
        {
            R("retrikt", 13, 0.732), R("store-only-student", 13, 0.728),
            R("retrikt", 21, 0.734), R("store-only-student", 21, 0.742),
            R("retrikt", 42, 0.745), // no store-only row on seed 42: not paired
            R("store-only-student", 87, 0.722),
        };
        // Differences +0.4 and −0.8 points: mean −0.2, sd 0.85, standard error 0.6.
        Assert.Equal("retrikt − store-only-student: 13 +0.4, 21 −0.8; mean −0.2, sd 0.8, standard error 0.6 (n = 2)",
            ResultsReport.PairedLine(results, "retrikt", "store-only-student"));
        Assert.Null(ResultsReport.PairedLine(results, "retrikt", "store-only-ppo"));
    }

    /// <summary>
    /// One seed of five must not read like a finished cell (the single split of CB or BoolQ has no n), a cell whose seeds
    /// were run with different settings says so, and the numbers do not follow the thread's culture (no decimal comma).
    /// </summary>
    [Fact]
    public void ACellNamesItsSeedCountAndMixedSettingsInAnyCulture()
    {
        RowResult R(string task, int? seed, double accuracy, string config = "a") => new() { Task = task, Seed = seed, Row = "retrikt", Accuracy = accuracy, MacroF1 = 0.5, PositiveF1 = 0.6, ConfigKey = config };
        var culture = System.Globalization.CultureInfo.CurrentCulture;
        try
        {
            System.Globalization.CultureInfo.CurrentCulture = new System.Globalization.CultureInfo("de-DE");
            Assert.Equal("76.7 (n=1)", ResultsReport.Cell([R("SST-2", 13, 0.767)], "SST-2"));
            Assert.Equal("76.7 / 50.0", ResultsReport.Cell([R("CB", null, 0.767)], "CB"));
            Assert.Equal("80.0 ± 14.1 / 60.0 ± 0.0 (n=2)", ResultsReport.Cell([R("MRPC", 13, 0.7), R("MRPC", 21, 0.9)], "MRPC"));
            Assert.Equal("80.0 ± 14.1 (n=2) **mixed settings (2 configs)**", ResultsReport.Cell([R("RTE", 13, 0.7), R("RTE", 21, 0.9, "b")], "RTE"));
        }
        finally { System.Globalization.CultureInfo.CurrentCulture = culture; }
    }

    /// <summary>
    /// The SST-2 transfer goals are defined on all five seeds (../shared/tools/transfer-goals refuses fewer): on a partial
    /// mean the status is "pending", not "met"; and a sweep row run on another task stays out of the SST-2 sweep table.
    /// </summary>
    [Fact]
    public void TransferGoalsArePendingUntilEveryRowHasFiveSeeds()
    {
        RowResult R(string row, int seed, double accuracy, string task = "SST-2") => new() { Task = task, Seed = seed, Row = row, Accuracy = accuracy, ConfigKey = "k" };
        int[] seeds = [13, 21, 42, 87, 100];
        var full = seeds.SelectMany(s => new[] { R(Rows.Teacher, s, 0.85), R(Rows.FewShotStudent, s, 0.55), R(Rows.StoreOnlyStudent, s, 0.70), R(Rows.RetriKT, s, 0.80), R(Rows.MlNetFeaturizeText, s, 0.50) }).ToList();
        var options = new Cli.Options
        {
            DataRoot = Temp, Tasks = ["SST-2"], Seeds = seeds, Rows = Rows.All, CacheRoot = Temp, ShippedTeachersRoot = Temp, Teacher = new TeacherSettings(),
            ResultsPath = Path.Combine(Temp, "results.jsonl"), ReportPath = Path.Combine(Temp, "RESULTS.md"), PlotPath = Path.Combine(Temp, "results.png"),
        };
        string Report(IEnumerable<RowResult> results)
        {
            var path = Path.Combine(Temp, "RESULTS.md");
            File.Delete(path);
            ResultsReport.WriteMarkdown(results, options, [], [], null, path);
            return File.ReadAllText(path);
        }
        var complete = Report(full.Append(R("sweep-store-512", 13, 0.10, "MRPC")));
        Assert.Contains("| teacher-prompted ≥ 80 % | 85.0 (n=5) | met |", complete);
        Assert.Contains("| best RetriKT row ≥ store-only-student + 1.5 | 80.0 vs 70.0 + 1.5 = 71.5 | met |", complete);
        Assert.DoesNotContain("## Sweeps", complete); // the only sweep row is MRPC's
        // The teacher on one seed only: no verdict on either goal that reads it (the old report said "met" on that one seed).
        var partial = Report(full.Where(r => r.Row != Rows.Teacher || r.Seed == 13));
        Assert.Contains("| teacher-prompted ≥ 80 % | 85.0 (n=1) | pending: teacher-prompted has 1 of 5 seeds |", partial);
        Assert.Contains("| best RetriKT row ≥ 0.9 × teacher | retrikt 80.0 vs 0.9 × 85.0 = 76.5 | pending: teacher-prompted has 1 of 5 seeds |", partial);
        Assert.Contains("| best RetriKT row ≥ fewshot-student + 15 | 80.0 vs 55.0 + 15 = 70.0 | met |", partial);
    }

    /// <summary>
    /// A goal read on a row whose seeds were run with different settings (another teacher, a --set on some seeds) gives
    /// no verdict, as the row's table cell says "mixed settings": the goals table said "met" on such a mean without a word.
    /// </summary>
    [Fact]
    public void TransferGoalsGiveNoVerdictOnARowOfMixedSettings()
    {
        RowResult R(string row, int seed, double accuracy, string config = "k") => new() { Task = "SST-2", Seed = seed, Row = row, Accuracy = accuracy, ConfigKey = config };
        int[] seeds = [13, 21, 42, 87, 100];
        var results = seeds.SelectMany(s => new[]
        {
            R(Rows.Teacher, s, 0.85, s < 42 ? "teacher-a" : "teacher-b"), R(Rows.FewShotStudent, s, 0.55), R(Rows.StoreOnlyStudent, s, 0.70),
            R(Rows.RetriKT, s, 0.80), R(Rows.MlNetFeaturizeText, s, 0.50),
        }).ToList();
        var options = new Cli.Options
        {
            DataRoot = Temp, Tasks = ["SST-2"], Seeds = seeds, Rows = Rows.All, CacheRoot = Temp, ShippedTeachersRoot = Temp, Teacher = new TeacherSettings(),
            ResultsPath = Path.Combine(Temp, "results.jsonl"), ReportPath = Path.Combine(Temp, "RESULTS.md"), PlotPath = Path.Combine(Temp, "results.png"),
        };
        var path = Path.Combine(Temp, "RESULTS.md");
        ResultsReport.WriteMarkdown(results, options, [], [], null, path);
        var report = File.ReadAllText(path);
        Assert.Contains("| Teacher, prompted (verbalizer) | 85.0 ± 0.0 (n=5) **mixed settings (2 configs)** |", report);
        Assert.Contains("| teacher-prompted ≥ 80 % | 85.0 (n=5) | mixed settings: teacher-prompted has 2 configs |", report);
        Assert.Contains("| best RetriKT row ≥ 0.9 × teacher | retrikt 80.0 vs 0.9 × 85.0 = 76.5 | mixed settings: teacher-prompted has 2 configs |", report);
        Assert.Contains("| best RetriKT row ≥ fewshot-student + 15 | 80.0 vs 55.0 + 15 = 70.0 | met |", report);
    }

    /// <summary>
    /// Two harness processes (lanes with their own --cache, one results file) each write the report when they finish. The
    /// report went through one fixed temporary name, RESULTS.md.tmp: one lane's rename took the other's half-written file
    /// or found none ("Could not find file"). Each write now has a temporary file of its own, and the report (with the
    /// part written by hand, which each write reads back from the file) comes out whole.
    /// </summary>
    [Fact]
    public void TwoReportsWrittenAtOnceBothSucceedAndLeaveOneWholeReport()
    {
        RowResult R(int seed, double accuracy) => new() { Task = "SST-2", Seed = seed, Row = Rows.RetriKT, Accuracy = accuracy, ConfigKey = "k" };
        var results = Enumerable.Range(0, 400).Select(i => R(i, 0.5 + i / 1000.0)).ToList();
        var options = new Cli.Options
        {
            DataRoot = Temp, Tasks = ["SST-2"], Seeds = [13], Rows = Rows.All, CacheRoot = Temp, ShippedTeachersRoot = Temp, Teacher = new TeacherSettings(),
            ResultsPath = Path.Combine(Temp, "results.jsonl"), ReportPath = Path.Combine(Temp, "RESULTS.md"), PlotPath = Path.Combine(Temp, "results.png"),
        };
        var path = Path.Combine(Temp, "RESULTS.md");
        ResultsReport.WriteMarkdown(results, options, [], [], null, path);
        File.AppendAllText(path, "Notes written by hand, which every report keeps.\n");
        ResultsReport.WriteMarkdown(results, options, [], [], null, path);
        var whole = File.ReadAllText(path);
        Assert.Contains("Notes written by hand", whole);
        using var start = new Barrier(2);
        void Lane()
        {
            start.SignalAndWait();
            for (int i = 0; i < 40; i++) ResultsReport.WriteMarkdown(results, options, [], [], null, path);
        }
        var lanes = new[] { Task.Run(Lane), Task.Run(Lane) };
        var failure = Record.Exception(() => Task.WaitAll(lanes));
        Assert.True(failure is null, $"a lane's report failed: {failure?.InnerException?.Message ?? failure?.Message}");
        Assert.Equal(whole, File.ReadAllText(path));
        Assert.Equal([path], Directory.GetFiles(Temp, "RESULTS.md*"));
    }

    [Fact]
    public void StoreSizePlotNeedsThreePointsOfSeed13AndIsWrittenBesideTheResultsPlot()
    {
        RowResult R(string row, int seed, double accuracy) => new() { Task = "SST-2", Seed = seed, Row = row, Accuracy = accuracy };
        string resultsPlot = Path.Combine(Temp, "results.png");
        var two = new List<RowResult> { R("sweep-store-512", 13, 0.667), R("retrikt", 13, 0.731), R("sweep-store-128", 21, 0.62) };
        Assert.Null(ResultsReport.WriteStoreSizePlot(two, resultsPlot, _ => { })); // seed 21's point does not count
        var three = two.Append(R("sweep-no-retrieval-512", 13, 0.654)).ToList();
        var written = ResultsReport.WriteStoreSizePlot(three, resultsPlot, _ => { });
        Assert.Equal(Path.Combine(Temp, "store-size.png"), written);
        Assert.True(new FileInfo(written!).Length > 1000);
    }
}
