using System.IO.Compression;
using Microsoft.ML;
using RetriKT.MLNet.Bridge;
using RetriKT.MLNet.Student;
using RetriKT.MLNet.Tests.Infrastructure;
using TorchSharp;

namespace RetriKT.MLNet.Tests.Student;

/// <summary>τ has one source of truth: the transformer's number (learned, then tuned), never a second copy in the weights.</summary>
public class TemperatureStoredOnceTests
{
    private static (MLContext Ml, IDataView Data, RetrievalClassifierTransformer Student) Train()
    {
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable(RetrievalClassifierBehaviourTests.Synthetic(30, 11));
        var keyMap = ml.Transforms.Conversion.MapValueToKey("Label").Fit(data);
        var student = ml.MulticlassClassification.Trainers.RetrievalClassifier(new RetrievalClassifierTrainer.Options
        {
            HiddenSize = 16, Layers = 1, Heads = 2, MaxLength = 16, Epochs = 3, BatchSize = 8,
            // τ is tuned on a validation set, so the τ the model predicts with differs from the learned one.
            ValidationSet = keyMap.Transform(ml.Data.LoadFromEnumerable(RetrievalClassifierBehaviourTests.Synthetic(12, 12))),
        }).Fit(keyMap.Transform(data));
        return (ml, data, student);
    }

    [Fact]
    public void TheSavedModelHoldsTauOnceAndReloadsWithIt()
    {
        var (ml, data, student) = Train();
        using var owned = student;
        Assert.DoesNotContain(student.Model.Weights.Tensors, t => t.Name == StudentWeights.TemperatureName);
        using var network = StudentModel.FromRuntime(student.Model, torch.CPU);
        Assert.Equal((float)student.Temperature, network.TemperatureValue, 6); // the training network rebuilt with the runtime's τ, not a literal

        using var loaded = SaveAndLoad(ml, student, data.Schema);
        Assert.Equal(student.Temperature, loaded.Temperature);
        Assert.DoesNotContain(loaded.Model.Weights.Tensors, t => t.Name == StudentWeights.TemperatureName);
        Assert.Equal(student.Predict("a wonderful film").Scores, loaded.Predict("a wonderful film").Scores);
    }

    [Fact]
    public void AModelSavedWithTheLearnedTauInItsWeightsLoadsWithItsSavedTau()
    {
        var (ml, data, student) = Train();
        using var owned = student;
        // What models saved before held: the learned τ (here a different value) as a weight beside the saved number.
        var m = student.Model;
        var legacyWeights = new StudentWeights([.. m.Weights.Tensors, new NamedTensor(StudentWeights.TemperatureName, [1], [(float)Math.Log(0.7)])]);
        var legacyModel = new RetrievalModel(m.Config, legacyWeights, m.Tokenizer, m.Store, m.Temperature, m.NeighborCount, m.Lexical,
            m.LexicalNeighborCount, m.LexicalTemperature);
        using var legacy = new RetrievalClassifierTransformer(MlNetEnvironment.Of(ml.MulticlassClassification.Trainers), legacyModel,
            student.RetrievalWeight, student.Columns, student.TeacherParameterCount, saveStoreTexts: true, student.LexicalRetrievalWeight);

        using var loaded = SaveAndLoad(ml, legacy, data.Schema);
        Assert.Equal(student.Temperature, loaded.Temperature);
        Assert.DoesNotContain(loaded.Model.Weights.Tensors, t => t.Name == StudentWeights.TemperatureName);
        Assert.Equal(student.Predict("a dull boring plot").Scores, loaded.Predict("a dull boring plot").Scores);
        using var network = StudentModel.FromRuntime(loaded.Model, torch.CPU);
        Assert.Equal((float)student.Temperature, network.TemperatureValue, 6);
    }

    [Fact]
    public void AnOlderModelFileKeepsOnlyItsSavedTau()
    {
        // Written before this change (format 0x00010001): Weights.bin still holds the learned τ beside the saved number.
        var path = Path.Combine(AppContext.BaseDirectory, "Student", "Fixtures", "student-v10001.zip");
        using (var zip = ZipFile.OpenRead(path))
        using (var raw = new MemoryStream())
        {
            using (var part = zip.Entries.Single(e => e.FullName.EndsWith("Weights.bin", StringComparison.Ordinal)).Open()) part.CopyTo(raw);
            raw.Position = 0;
            var weights = StudentWeights.Read(new BinaryReader(raw), "fixture Weights.bin");
            Assert.Contains(weights.Tensors, t => t.Name == StudentWeights.TemperatureName);
        }
        using var old = (RetrievalClassifierTransformer)new MLContext().Model.Load(path, out _);
        Assert.DoesNotContain(old.Model.Weights.Tensors, t => t.Name == StudentWeights.TemperatureName);
        using var network = StudentModel.FromRuntime(old.Model, torch.CPU);
        Assert.Equal((float)old.Temperature, network.TemperatureValue, 6);
    }

    /// <summary>model.zip written and read back in a fresh context, as a server would.</summary>
    private static RetrievalClassifierTransformer SaveAndLoad(MLContext ml, RetrievalClassifierTransformer model, DataViewSchema schema)
    {
        using var temp = new TempDir();
        var path = temp.File("retrikt-tau.zip");
        ml.Model.Save(model, schema, path);
        return (RetrievalClassifierTransformer)new MLContext().Model.Load(path, out _);
    }
}
