using System.Collections.Concurrent;
using System.IO.Compression;
using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Microsoft.ML;
using RetriKT.MLNet.Hosting.Tests.Infrastructure;
using RetriKT.MLNet.Student;
using RetriKT.MLNet.Tests.Infrastructure;
using RetriKT.WebApi;

namespace RetriKT.MLNet.Hosting.Tests;

/// <summary>
/// Serving RetriKT models through reloads: every /explain response comes from one model generation; /healthz says
/// Degraded (with the error) while a damaged or deleted newest model leaves an older one serving; a bad model at
/// start-up ends the real process with one line and exit code 1.
/// </summary>
public class ExplainAndHealthTests
{
    private static readonly TimeSpan SwapTimeout = TimeSpan.FromSeconds(20);

    /// <summary>Two tiny real RetrievalClassifiers (served form) trained on different SST-2 splits: different answers and neighbours.</summary>
    private static readonly Lazy<(byte[] V1, byte[] V2)> Students = new(() => (Train("train.tsv", 1), Train("dev.tsv", 2)));

    private static byte[] Train(string split, int seed)
    {
        var ml = new MLContext(seed: seed);
        var rows = File.ReadAllLines(SharedData.Path("data", "SST-2", "k-shot", "16-13", split)).Skip(1)
            .Select(l => l.Split('\t')).Select(f => new LabelledText { Text = f[0], Label = f[1] }).ToList();
        var data = ml.Data.LoadFromEnumerable(rows);
        var keyed = ml.Transforms.Conversion.MapValueToKey("Label").Fit(data).Transform(data);
        using var student = ml.MulticlassClassification.Trainers.RetrievalClassifier(new RetrievalClassifierTrainer.Options
        {
            Epochs = 2, HiddenSize = 16, Layers = 1, Heads = 2, MaxLength = 24, NeighborCount = 4, Seed = seed,
        }).Fit(keyed);
        var serving = student.Append(ml.Transforms.Conversion.MapKeyToValue("PredictedLabel").Fit(student.Transform(keyed)));
        using var buffer = new MemoryStream();
        ml.Model.Save(serving, ml.Data.LoadFromEnumerable(new[] { new TextInput() }).Schema, buffer);
        return buffer.ToArray();
    }

    private sealed class LabelledText
    {
        public string Text { get; set; } = "";
        public string Label { get; set; } = "";
    }

    private static readonly string[] Sentences = ["a charming and moving film", "dull , lifeless and far too long", "the best movie of the year", "a mess ."];

    [SharedDataFact]
    public async Task UnderReloads_EveryExplainResponseComesFromOneModelGeneration()
    {
        using var dir = new TempDir();
        var (v1Bytes, v2Bytes) = Students.Value;
        string v1 = dir.File("v1.zip"), v2 = dir.File("v2.zip"), modelPath = dir.File("model.zip");
        File.WriteAllBytes(v1, v1Bytes);
        File.WriteAllBytes(v2, v2Bytes);
        File.Copy(v1, modelPath);
        await using var server = await WebApiServer.StartAsync(modelPath);

        // Reference responses of each model (generation removed): odd generations serve v1, even ones v2.
        var reference = new Dictionary<string, string>[2];
        reference[0] = await Answers(server, Sentences);
        TestModels.DeployByRename(v2, modelPath);
        Assert.True(Wait.Until(() => server.Pool.GetModelGeneration() == 2, SwapTimeout), "v2 was not loaded");
        reference[1] = await Answers(server, Sentences);
        Assert.All(Sentences, s => Assert.NotEqual(reference[0][s], reference[1][s]));

        var failures = new ConcurrentQueue<string>();
        int answered = 0;
        using var stop = new CancellationTokenSource();
        var load = Enumerable.Range(0, 8).Select(c => Task.Run(async () =>
        {
            for (int i = 0; !stop.IsCancellationRequested; i++)
            {
                var text = Sentences[(c + i) % Sentences.Length];
                var (generation, body) = await Explain(server, text);
                if (body != reference[(generation + 1) % 2][text])
                    failures.Enqueue($"generation {generation}, '{text}': {body}");
                Interlocked.Increment(ref answered);
            }
        })).ToArray();
        try
        {
            // Swap back and forth under load; each swap waits for its reload so generation parity names the model.
            for (long generation = 3; generation <= 12; generation++)
            {
                int before = Volatile.Read(ref answered);
                TestModels.DeployByRename(generation % 2 == 1 ? v1 : v2, modelPath);
                Assert.True(Wait.Until(() => server.Pool.GetModelGeneration() == generation, SwapTimeout), $"generation {generation} was not loaded");
                Assert.True(Wait.Until(() => Volatile.Read(ref answered) > before + 20, SwapTimeout), "no answers between swaps");
            }
        }
        finally
        {
            stop.Cancel();
            await Task.WhenAll(load);
        }
        Assert.True(failures.IsEmpty, $"{failures.Count} of {answered} responses mixed generations, e.g. {string.Join("\n", failures.Take(3))}");
        Assert.True(answered > 200, $"only {answered} responses");
    }

    [SharedDataFact]
    public async Task ADamagedOrDeletedNewModel_LeavesTheOldOneServing_AndHealthSaysDegradedWithTheError()
    {
        using var dir = new TempDir();
        var (v1Bytes, v2Bytes) = Students.Value;
        string modelPath = dir.File("model.zip"), incoming = dir.File("incoming.zip");
        File.WriteAllBytes(modelPath, v1Bytes);
        await using var server = await WebApiServer.StartAsync(modelPath);
        Assert.Equal("Healthy", await server.Client.GetStringAsync("/healthz"));
        var before = await Answers(server, Sentences);

        // The issue's case: the weights changed inside a zip that is itself valid (its CRCs were rewritten).
        File.WriteAllBytes(incoming, TamperWeights(v2Bytes));
        File.Move(incoming, modelPath, overwrite: true);
        Assert.True(Wait.Until(() => server.Pool.GetLastLoadError() is not null, SwapTimeout), "the damaged model's failure was not reported");
        var error = server.Pool.GetLastLoadError()!;
        Assert.Contains("Weights.bin", error);
        Assert.Contains("damaged or was modified", error);
        Assert.DoesNotContain("target of an invocation", error);
        // The body says why (it said "Degraded" alone: the reason was only in the server's log).
        Assert.Equal($"Degraded: model generation 1 serving; the newest model failed to load: {error}", await server.Client.GetStringAsync("/healthz"));
        Assert.Equal(1, server.Pool.GetModelGeneration());
        Assert.Equal(before, await Answers(server, Sentences));   // the old model keeps serving

        // A good model: healthy again.
        File.WriteAllBytes(incoming, v2Bytes);
        File.Move(incoming, modelPath, overwrite: true);
        Assert.True(Wait.Until(() => server.Pool.GetModelGeneration() == 2, SwapTimeout), "v2 was not loaded");
        Assert.Null(server.Pool.GetLastLoadError());
        Assert.Equal("Healthy", await server.Client.GetStringAsync("/healthz"));

        // Renamed away (a deployment script that moves the old file aside first): Degraded, still serving; back: Healthy.
        var aside = dir.File("model-old.zip");
        File.Move(modelPath, aside);
        Assert.True(Wait.Until(() => server.Logs.Has(Microsoft.Extensions.Logging.LogLevel.Warning, "disappeared"), SwapTimeout), "the rename away was not noticed");
        Assert.Matches("^Degraded: model generation 2 serving; the newest model failed to load: Model file '.*' (was deleted|disappeared); the loaded model keeps serving[.]$",
            await server.Client.GetStringAsync("/healthz"));
        Assert.Equal(HttpStatusCode.OK, (await server.Client.PostAsJsonAsync("/predict", new { text = Sentences[0] })).StatusCode);
        File.Move(aside, modelPath);
        Assert.True(Wait.Until(() => server.Pool.GetLastLoadError() is null, SwapTimeout), "the file's return was not noticed");
        Assert.Equal("Healthy", await server.Client.GetStringAsync("/healthz"));
        Assert.Equal(2, server.Pool.GetModelGeneration());

        // Deleted: logged, Degraded, still serving.
        File.Delete(modelPath);
        Assert.True(Wait.Until(() => server.Logs.Has(Microsoft.Extensions.Logging.LogLevel.Warning, "was deleted"), SwapTimeout), "the deletion was not logged");
        Assert.Matches("^Degraded: model generation 2 serving; the newest model failed to load: Model file '.*' (was deleted|disappeared); the loaded model keeps serving[.]$",
            await server.Client.GetStringAsync("/healthz"));
        Assert.Equal(HttpStatusCode.OK, (await server.Client.PostAsJsonAsync("/predict", new { text = Sentences[0] })).StatusCode);
    }

    [SharedDataFact]
    public void ABadModelAtStartUp_EndsTheProcessWithOneLineAndExitCodeOne()
    {
        using var dir = new TempDir();
        var (v1Bytes, _) = Students.Value;
        var damaged = dir.File("damaged.zip");
        File.WriteAllBytes(damaged, TamperWeights(v1Bytes));
        var (code, error) = RunWebApi(["--ModelPath", damaged, "--urls", "http://127.0.0.1:0"]);
        var lines = error.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(code == 1, $"exit code {code}: {error}");
        Assert.True(lines.Length == 1, $"expected one line on stderr, found {lines.Length}:\n{error}");
        Assert.Contains(damaged, lines[0]);
        Assert.Contains("Weights.bin", lines[0]);

        var (missingCode, missingError) = RunWebApi(["--ModelPath", dir.File("missing.zip"), "--urls", "http://127.0.0.1:0"]);
        Assert.Equal(1, missingCode);
        Assert.Equal($"error: Model file '{dir.File("missing.zip")}' does not exist.", missingError.Trim());

        // A folder was reported as a file that "does not exist".
        var (folderCode, folderError) = RunWebApi(["--ModelPath", dir.Path, "--urls", "http://127.0.0.1:0"]);
        Assert.Equal(1, folderCode);
        Assert.Equal($"error: Model file '{System.IO.Path.GetFullPath(dir.Path)}' is a folder; expected a model.zip file.", folderError.Trim());
    }

    /// <summary>
    /// A model that reads a column the server does not give (a student saved with its training pipeline, whose
    /// MapValueToKey reads Label) was refused by ML.NET with an ArgumentException, which the server took for a bad
    /// switch: exit code 2 and "Could not find input column 'Label' (Parameter 'inputSchema')". It is a model that
    /// cannot be served (SERVING.md: wrong schema, exit code 1): one line saying that it does not fit, exit code 1.
    /// </summary>
    [SharedDataFact]
    public void AModelThatReadsAColumnTheServerDoesNotGiveAtStartUp_EndsTheProcessWithOneLineAndExitCodeOne()
    {
        using var dir = new TempDir();
        var ml = new MLContext(seed: 1);
        var rows = File.ReadAllLines(SharedData.Path("data", "SST-2", "k-shot", "16-13", "train.tsv")).Skip(1)
            .Select(l => l.Split('\t')).Select(f => new LabelledText { Text = f[0], Label = f[1] }).ToList();
        var data = ml.Data.LoadFromEnumerable(rows);
        var training = ml.Transforms.Conversion.MapValueToKey("Label")
            .Append(ml.MulticlassClassification.Trainers.RetrievalClassifier(new RetrievalClassifierTrainer.Options
            {
                Epochs = 1, HiddenSize = 16, Layers = 1, Heads = 2, MaxLength = 24, NeighborCount = 4, Seed = 1,
            }))
            .Append(ml.Transforms.Conversion.MapKeyToValue("PredictedLabel"));
        var path = dir.File("with-label-step.zip");
        using (var model = training.Fit(data)) ml.Model.Save(model, data.Schema, path);

        var (code, error) = RunWebApi(["--ModelPath", path, "--urls", "http://127.0.0.1:0"]);
        var lines = error.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(code == 1, $"exit code {code}: {error}");
        Assert.True(lines.Length == 1, $"expected one line on stderr, found {lines.Length}:\n{error}");
        Assert.StartsWith("error: The model does not fit TextInput -> TextPrediction: ", lines[0]);
        Assert.Contains("'Label'", lines[0]);
    }

    /// <summary>
    /// A misspelt switch (<c>--ModlePath</c>) was taken by ASP.NET's configuration and skipped by binding, so the server
    /// started on appsettings.json's model.zip, a model found in the working folder, without a word. It now ends with one
    /// line naming the switch and exit code 2; the host's own switches (--urls, --Logging:...) and the Serving section's
    /// settings still pass.
    /// </summary>
    [Fact]
    public void AMisspeltSwitchEndsTheProcessWithOneLineAndExitCodeTwo()
    {
        using var dir = new TempDir();
        var (code, error) = RunWebApi(["--ModlePath", dir.File("new.zip"), "--urls", "http://127.0.0.1:0"]);
        Assert.True(code == 2, $"exit code {code}: {error}");
        Assert.Equal("error: Unknown setting '--ModlePath'; this server's settings are --ModelPath, --Serving:MaxTextLength, --Serving:WatchModelFile " +
                     "(and the host's: --urls, --environment, --Logging:..., --Kestrel:...).", error.Trim());

        // Known switches pass the check: the run goes on to the model, which is missing.
        (code, error) = RunWebApi(["--ModelPath", dir.File("missing.zip"), "--Serving:MaxTextLength=100", "--urls", "http://127.0.0.1:0",
                                   "--Logging:LogLevel:Default", "Warning"]);
        Assert.Equal(1, code);
        Assert.Equal($"error: Model file '{dir.File("missing.zip")}' does not exist.", error.Trim());
    }

    /// <summary>
    /// A <c>Serving:MaxTextLength</c> below 1 started a server that said Healthy and answered every request 400 ("The text
    /// has 16 characters; at most 0 are accepted."). It now ends with one line naming the setting and exit code 2.
    /// </summary>
    [Fact]
    public void AMaxTextLengthBelowOneEndsTheProcessWithOneLineAndExitCodeTwo()
    {
        using var dir = new TempDir();
        foreach (var value in new[] { "0", "-5" })
        {
            var (code, error) = RunWebApi(["--ModelPath", dir.File("missing.zip"), "--Serving:MaxTextLength", value, "--urls", "http://127.0.0.1:0"]);
            Assert.True(code == 2, $"MaxTextLength {value}: exit code {code}: {error}");
            Assert.Equal($"error: Serving:MaxTextLength must be at least 1, found {value}: every request would be refused as too long.", error.Trim());
        }
    }

    /// <summary>
    /// A Serving setting given a value its type cannot hold ended the process with exit code 1, the code of a model that
    /// cannot be served, though it is a mistake on the command line as an unknown switch is (exit code 2, as the
    /// TeacherServer gives for the same mistake). One line naming the setting and the value, and exit code 2.
    /// </summary>
    [Fact]
    public void AServingSettingOfTheWrongTypeEndsTheProcessWithOneLineAndExitCodeTwo()
    {
        using var dir = new TempDir();
        foreach (var (setting, value) in new[] { ("--Serving:MaxTextLength", "abc"), ("--Serving:WatchModelFile", "maybe") })
        {
            var (code, error) = RunWebApi(["--ModelPath", dir.File("missing.zip"), setting, value, "--urls", "http://127.0.0.1:0"]);
            Assert.True(code == 2, $"{setting} {value}: exit code {code}: {error}");
            var line = Assert.Single(error.Split('\n', StringSplitOptions.RemoveEmptyEntries));
            Assert.StartsWith("error: ", line);
            Assert.Contains(setting[2..], line);
            Assert.Contains($"'{value}'", line);
        }
    }

    /// <summary>
    /// What ASP.NET's configuration skips without a word: a switch with no value (<c>--ModelPath $MODEL</c> with the variable
    /// unset), a switch with one dash, a path with no switch. Each left ModelPath at appsettings.json's model.zip, and the
    /// server started on a model.zip found in the working folder (here it said only that none is there, exit code 1). Each now
    /// ends with one line naming the argument and exit code 2.
    /// </summary>
    [Fact]
    public void ASwitchWithoutValueOrAnArgumentThatIsNoSwitchEndsTheProcessWithOneLineAndExitCodeTwo()
    {
        using var dir = new TempDir();
        foreach (var (arguments, expected) in new (string[], string)[]
        {
            (["--urls", "http://127.0.0.1:0", "--ModelPath"], "error: Setting '--ModelPath' has no value; give it as --ModelPath <value> or --ModelPath=<value>."),
            (["--ModelPath", "--urls", "http://127.0.0.1:0"], "error: Setting '--ModelPath' has no value; give it as --ModelPath <value> or --ModelPath=<value>."),
            (["-ModelPath", dir.File("new.zip"), "--urls", "http://127.0.0.1:0"], "error: Unexpected argument '-ModelPath': settings are given as --Name value or --Name=value; this server's settings are --ModelPath,"),
            (["new.zip", "--urls", "http://127.0.0.1:0"], "error: Unexpected argument 'new.zip': settings are given as --Name value or --Name=value;"),
        })
        {
            var (code, error) = RunWebApi(arguments);
            Assert.True(code == 2, $"[{string.Join(' ', arguments)}]: exit code {code}: {error}");
            Assert.StartsWith(expected, Assert.Single(error.Split('\n', StringSplitOptions.RemoveEmptyEntries)));
        }
    }

    /// <summary>--help (or -?) was refused as an unknown setting with exit code 2; it prints the settings with their defaults.</summary>
    [Fact]
    public void HelpListsTheSettingsWithTheirDefaultsAndExitsZero()
    {
        foreach (var flag in new[] { "--help", "-?" })
        {
            var (code, output, error) = ChildProcess.RunApp("RetriKT.WebApi.dll", [flag]);
            Assert.True(code == 0, $"{flag}: exit code {code}: {error}");
            Assert.Equal("", error);
            Assert.StartsWith("Usage: dotnet RetriKT.WebApi.dll --ModelPath <model.zip>", output);
            Assert.Contains("--Serving:MaxTextLength (default: 2000)", output);
            Assert.Contains("train-demo-model <train.tsv> <model.zip> [iterations]", output);
        }
    }

    /// <summary>
    /// train-demo-model finds the text and label columns by their header names: read by position, a file with the label
    /// first trained on the labels as texts, exited 0 and saved a model that answers with sentences. A file without the
    /// columns is one line naming the file and the header (it was ML.NET's "doesn't contain key values metadata").
    /// </summary>
    [SharedDataFact]
    public void TrainDemoModelReadsItsColumnsByName_AndAFileWithoutThemIsOneLine()
    {
        using var dir = new TempDir();
        var swapped = dir.File("label-first.tsv");
        File.WriteAllLines(swapped, File.ReadLines(SharedData.Path("data", "SST-2", "k-shot", "16-13", "train.tsv"))
            .Select(l => l.Split('\t') is [var text, var label] ? $"{label}\t{text}" : l));
        var (code, error) = RunWebApi(["train-demo-model", swapped, dir.File("model.zip")]);
        Assert.True(code == 0, $"exit code {code}: {error}");
        var ml = new MLContext(1);
        var model = ml.Model.Load(dir.File("model.zip"), out _);
        var engine = ml.Model.CreatePredictionEngine<TextInput, TextPrediction>(model);
        Assert.All(TestModels.Sentences, s => Assert.Contains(engine.Predict(new TextInput { Text = s }).PredictedLabel, new[] { "0", "1" }));

        var commas = dir.File("commas.tsv");
        File.WriteAllText(commas, "sentence,label\na fine film .,1\na dull film .,0\n");
        (code, error) = RunWebApi(["train-demo-model", commas, dir.File("commas.zip")]);
        Assert.Equal(1, code);
        Assert.Equal($"error: train-demo-model: {commas} line 1: column 'sentence' (or 'text') not found in header [sentence,label] " +
                     "(the file looks comma-separated; expected tab-separated).", error.Trim());
        Assert.False(File.Exists(dir.File("commas.zip")));

        // An empty output path failed only after training, naming no argument.
        (code, error) = RunWebApi(["train-demo-model", swapped, ""]);
        Assert.Equal(2, code);
        Assert.Equal("error: train-demo-model: expected a path for <model.zip>, found an empty value.", error.Trim());
    }

    /// <summary>The model file with one byte of its student's Weights.bin changed, rewritten as a valid zip (fresh CRCs).</summary>
    private static byte[] TamperWeights(byte[] model)
    {
        using var buffer = new MemoryStream();
        buffer.Write(model);
        using (var zip = new ZipArchive(buffer, ZipArchiveMode.Update, leaveOpen: true))
        {
            var entry = zip.Entries.Single(e => e.FullName.EndsWith("Weights.bin", StringComparison.Ordinal));
            byte[] weights;
            using (var read = entry.Open()) { using var copy = new MemoryStream(); read.CopyTo(copy); weights = copy.ToArray(); }
            weights[weights.Length / 2] ^= 0x40;
            var name = entry.FullName;
            entry.Delete();
            using var write = zip.CreateEntry(name).Open();
            write.Write(weights);
        }
        return buffer.ToArray();
    }

    private static async Task<Dictionary<string, string>> Answers(WebApiServer server, IEnumerable<string> sentences)
    {
        var answers = new Dictionary<string, string>();
        foreach (var s in sentences) answers[s] = (await Explain(server, s)).Body;
        return answers;
    }

    /// <summary>The /explain response's generation, and the rest of it (prediction + neighbours) as text.</summary>
    private static async Task<(long Generation, string Body)> Explain(WebApiServer server, string text)
    {
        using var response = await server.Client.PostAsJsonAsync("/explain", new { text });
        var body = await response.Content.ReadAsStringAsync();
        if (response.StatusCode != HttpStatusCode.OK) return (-1, $"{response.StatusCode} {body}");
        using var json = JsonDocument.Parse(body);
        var prediction = json.RootElement.GetProperty("prediction");
        long generation = prediction.GetProperty("modelGeneration").GetInt64();
        return (generation, prediction.GetProperty("label").GetString() + " " + prediction.GetProperty("scores").GetRawText() + " "
            + json.RootElement.GetProperty("neighbours").GetRawText());
    }

    private static (int Code, string Error) RunWebApi(string[] arguments)
    {
        var (code, _, error) = ChildProcess.RunApp("RetriKT.WebApi.dll", arguments);
        return (code, error);
    }
}
