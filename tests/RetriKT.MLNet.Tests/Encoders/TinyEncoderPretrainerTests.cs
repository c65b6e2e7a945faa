using Microsoft.ML;
using RetriKT.MLNet.Encoders;
using RetriKT.MLNet.Student;
using RetriKT.MLNet.Tests.Infrastructure;
using TorchSharp;

namespace RetriKT.MLNet.Tests.Encoders;

public class TinyEncoderPretrainerTests
{
    private static List<string> Reviews(int count)
        => File.ReadLines(SharedData.Path("data", "corpora", "movie-reviews-polarity-v2", "part-000.txt")).Where(l => l.Trim().Length > 0).Take(count).ToList();

    private static TinyEncoderPretrainerOptions Small() => new() { VocabularySize = 300, Steps = 60, BatchSize = 16, WarmupSteps = 10, Seed = 3 };

    [SharedDataFact]
    public void APretrainedTinyEncoderIsABackboneTheStudentLoadsAndFineTunes()
    {
        using var root = new TempDir("retrikt-tiny-encoder-");
        var ml = new MLContext(seed: 1);
        var folder = Path.Combine(root.Path, "encoder");
        var report = new TinyEncoderPretrainer(ml, Small()).Train(Reviews(300), folder);

        foreach (var file in new[] { "config.json", "vocab.txt", "model.safetensors", "pretraining.json" })
            Assert.True(File.Exists(Path.Combine(folder, file)), $"{file} missing from {folder}");
        Assert.Equal([folder], Directory.GetDirectories(root.Path)); // the temporary folder was renamed, none left behind
        Assert.Equal(300, File.ReadAllLines(Path.Combine(folder, "vocab.txt")).Length);
        // A uniform guess over 300 pieces costs ln 300 = 5.70 nats; 60 steps must have learned at least the piece frequencies.
        Assert.True(report.FinalLoss < Math.Log(300) - 0.7, $"final masked-token loss {report.FinalLoss:F3}, a uniform guess is {Math.Log(300):F3}");
        Assert.True(report.Windows > 300 && report.UnknownShare < 0.05, $"{report.Windows} windows, {report.UnknownShare:P1} [UNK]");

        // Same seed, same corpus: the same weights, byte for byte (a second run replaces the folder atomically).
        var first = File.ReadAllBytes(Path.Combine(folder, "model.safetensors"));
        new TinyEncoderPretrainer(ml, Small()).Train(Reviews(300), folder);
        Assert.Equal(first, File.ReadAllBytes(Path.Combine(folder, "model.safetensors")));

        // The folder is a Hugging Face BERT directory: the student takes it as its backbone and fine-tunes both layers.
        var options = new RetrievalClassifierTrainer.Options
        {
            Backbone = folder, TrainableBackboneLayers = 2, BackboneLearningRate = 5e-4, Epochs = 2, TeacherParameterCount = 5_795_072,
        };
        var model = ml.Transforms.Conversion.MapValueToKey("Label").Append(ml.MulticlassClassification.Trainers.RetrievalClassifier(options)).Fit(TestData.Sst2Train(ml));
        using var student = model.LastTransformer;
        Assert.StartsWith(folder, student.Backbone);
        Assert.Contains("top 2 of 2 layers", student.Backbone);
        Assert.Equal(300, student.Vocabulary.Count);
        Assert.Equal((48, 2, 4, 96), student.Shape);
        // The encoder's own weights plus the trained projection (48² + 48), head (2 × 48 + 2) and τ.
        Assert.Equal(report.Parameters + 48 * 48 + 48 + 2 * 48 + 2 + 1, student.ParameterCount);
        Assert.True(student.TeacherParameterRatio <= 0.02, $"ratio {student.TeacherParameterRatio:P2}");
        var prediction = student.Predict("a gorgeous , witty , seductive movie .");
        Assert.Contains(prediction.Label, student.LabelNames);
    }

    /// <summary>
    /// Pretraining leaves no tensor alive (counted on this thread by TorchSharp, created minus disposed): the
    /// initialisation left the handle normal_ returns, one per weight matrix, to the finalizer at every run.
    /// </summary>
    [SharedDataFact]
    public void PretrainingLeavesNoTensorAlive()
    {
        using var root = new TempDir("retrikt-tiny-encoder-");
        var ml = new MLContext(seed: 1);
        var reviews = Reviews(100);
        long Live() => DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        long LeftByARun()
        {
            long before = Live();
            new TinyEncoderPretrainer(ml, new TinyEncoderPretrainerOptions { VocabularySize = 300, Steps = 3, BatchSize = 4, WarmupSteps = 1, Seed = 3 })
                .Train(reviews, Path.Combine(root.Path, "encoder"));
            return Live() - before;
        }
        LeftByARun(); // warms up what TorchSharp creates once per process
        Assert.Equal(0, LeftByARun());
    }

    /// <summary>
    /// Only the loss was checked: at LearningRate 1e5 both of 2 steps read a finite loss, the second's update made every
    /// weight NaN, and the run wrote that encoder and returned as if it had trained (the teacher's pretrainer checks the
    /// weights after each update). It now stops at that update, naming the parameter, and writes nothing.
    /// </summary>
    [SharedDataFact]
    public void AnUpdateThatMakesAWeightNonFiniteStopsTheRunBeforeTheEncoderIsWritten()
    {
        using var root = new TempDir("retrikt-tiny-encoder-");
        var folder = Path.Combine(root.Path, "encoder");
        var options = new TinyEncoderPretrainerOptions { VocabularySize = 300, Steps = 2, BatchSize = 16, WarmupSteps = 0, Seed = 3, LearningRate = 1e5 };
        var e = Assert.Throws<InvalidOperationException>(() => new TinyEncoderPretrainer(new MLContext(seed: 1), options).Train(Reviews(300), folder));
        Assert.StartsWith("Tiny encoder pretraining diverged at step 2: after the update, parameter '", e.Message);
        Assert.Empty(Directory.GetFileSystemEntries(root.Path));
    }

    /// <summary>
    /// A cancellation was first looked at before step 1: the run read, counted and encoded the whole corpus first (13 s
    /// for the 21 MB IMDb corpus, cancelled at 0.5 s). It now stops at the next document it reads.
    /// </summary>
    [SharedDataFact]
    public void ACancellationWhileTheCorpusIsReadStopsAtTheNextDocument()
    {
        using var root = new TempDir("retrikt-tiny-encoder-");
        using var cts = new CancellationTokenSource();
        int read = 0;
        var documents = Reviews(2000).Select(d => { if (++read == 100) cts.Cancel(); return d; });
        Assert.ThrowsAny<OperationCanceledException>(() => new TinyEncoderPretrainer(new MLContext(seed: 1), Small())
            .Train(documents, Path.Combine(root.Path, "encoder"), null, cts.Token));
        Assert.Equal(100, read);
        Assert.Empty(Directory.GetFileSystemEntries(root.Path));
    }

    [Fact]
    public void ShapesThatCannotWorkAreRefusedWithTheirValues()
    {
        var ml = new MLContext(seed: 1);
        var heads = Assert.Throws<ArgumentOutOfRangeException>(() => new TinyEncoderPretrainer(ml, new TinyEncoderPretrainerOptions { HiddenSize = 50, Heads = 4 }));
        Assert.Contains("HiddenSize (50) must be a positive multiple of Heads (4)", heads.Message);
        var window = Assert.Throws<ArgumentOutOfRangeException>(() => new TinyEncoderPretrainer(ml, new TinyEncoderPretrainerOptions { SequenceLength = 200 }));
        Assert.Contains("SequenceLength must be in [3, MaxPositions = 128], found 200", window.Message);
        var mask = Assert.Throws<ArgumentOutOfRangeException>(() => new TinyEncoderPretrainer(ml, new TinyEncoderPretrainerOptions { MaskProbability = 1 }));
        Assert.Contains("MaskProbability must be in (0, 1), found 1", mask.Message);
        var rate = Assert.Throws<ArgumentOutOfRangeException>(() => new TinyEncoderPretrainer(ml, new TinyEncoderPretrainerOptions { LearningRate = double.PositiveInfinity }));
        Assert.StartsWith("LearningRate must be positive and finite and WeightDecay >= 0 and finite, found ", rate.Message);
    }
}
