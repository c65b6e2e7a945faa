using System.Globalization;
using Microsoft.ML;
using RetriKT.MLNet.Student;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.Tests.Student;

/// <summary>
/// A model.zip written by the training side loads and predicts in an app that references only the RetriKT.MLNet
/// runtime and Microsoft.ML (tests/RetriKT.MLNet.RuntimeOnly): TorchSharp is absent from its deps.json and never
/// loaded, and its scores equal the training process's scores.
/// </summary>
public class RuntimeOnlyServingTests
{
    private const string App = "RetriKT.MLNet.RuntimeOnly.dll";

    [Fact]
    public void TheServingAppDependsOnNothingOfTorchSharp()
    {
        var deps = Path.Combine(AppContext.BaseDirectory, "RetriKT.MLNet.RuntimeOnly.deps.json");
        Assert.True(File.Exists(deps), $"expected the runtime-only app's {deps} next to the tests, found none");
        var text = File.ReadAllText(deps);
        Assert.Contains("RetriKT.MLNet", text);
        Assert.DoesNotContain("TorchSharp", text, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("libtorch", text, StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public void AModelTrainedWithTorchSharpPredictsTheSameScoresInTheRuntimeOnlyApp()
    {
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable(RetrievalClassifierBehaviourTests.Synthetic(40, 1));
        var keyMap = ml.Transforms.Conversion.MapValueToKey("Label").Fit(data);
        using var student = ml.MulticlassClassification.Trainers.RetrievalClassifier(new RetrievalClassifierTrainer.Options
        {
            HiddenSize = 16, Layers = 1, Heads = 2, MaxLength = 16, Epochs = 10, BatchSize = 8, LearningRate = 5e-3,
        }).Fit(keyMap.Transform(data));
        var texts = RetrievalClassifierBehaviourTests.Synthetic(12, 7).Select(r => r.Text).ToList();
        texts.Add("an unseen zzz word");
        var expected = student.PredictBatch(texts);

        using var folder = new TempDir("retrikt-runtime-only-");
        var modelPath = Path.Combine(folder.Path, "model.zip");
        ml.Model.Save(student, data.Schema, modelPath);
        var textsPath = Path.Combine(folder.Path, "texts.txt");
        File.WriteAllLines(textsPath, texts);

        var (code, output, error) = ChildProcess.RunApp(App, [modelPath, textsPath], timeoutSeconds: 120);
        Assert.True(code == 0, $"runtime-only app exited with {code}: {error}");
        var lines = output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        Assert.Equal(texts.Count, lines.Length);
        for (int i = 0; i < texts.Count; i++)
        {
            var scores = lines[i].Split(' ').Select(s => float.Parse(s, CultureInfo.InvariantCulture)).ToArray();
            Assert.Equal(student.LabelNames.Count, scores.Length);
            for (int k = 0; k < scores.Length; k++)
                Assert.True(Math.Abs(expected[i][k] - scores[k]) <= 1e-5,
                    $"row {i} '{texts[i]}', label {k}: training process {expected[i][k]} vs runtime-only app {scores[k]}");
        }
    }

    [Fact]
    public void AMissingModelIsOneClearLine()
    {
        var (code, _, error) = ChildProcess.RunApp(App, [Path.Combine(Path.GetTempPath(), "no-such-retrikt-model.zip"), "none.txt"]);
        Assert.Equal(4, code);
        Assert.Contains("no-such-retrikt-model.zip", error);
        Assert.Single(error.Split('\n', StringSplitOptions.RemoveEmptyEntries));
    }
}
