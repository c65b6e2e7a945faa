using Microsoft.ML;
using RetriKT.MLNet.Encoders;
using RetriKT.MLNet.Student;
using TorchSharp;

namespace RetriKT.MLNet.Tests.Student;

/// <summary>
/// Training a student leaves no tensor alive, for any number of epochs: counted on this thread by TorchSharp (created
/// minus disposed), after a Fit of 1 epoch and of 3. Each epoch's report read τ through a using on exp().clamp()'s result,
/// which left exp()'s handle to the finalizer, one per epoch of every student; and the initialisation left the handle
/// that normal_ (and copy_) return, one per weight matrix of every Fit.
/// </summary>
public class StudentTrainingTensorTests
{
    private static long Live() => DisposeScopeManager.Statistics.ThreadTotalLiveCount;

    /// <summary>The tensors left alive by training a student for 1 epoch and for 3 (the model it returns holds none).</summary>
    /// <remarks><paramref name="options"/> takes the epochs and a validation set of other rows, keyed alike.</remarks>
    private static (long OneEpoch, long ThreeEpochs) LeftAlive(Func<int, IDataView, RetrievalClassifierTrainer.Options> options)
    {
        var ml = new MLContext(seed: 1);
        var rows = RetrievalClassifierBehaviourTests.Synthetic(40, 1);
        var keyMap = ml.Transforms.Conversion.MapValueToKey("Label").Fit(ml.Data.LoadFromEnumerable(rows));
        var keyed = keyMap.Transform(ml.Data.LoadFromEnumerable(rows));
        var validation = keyMap.Transform(ml.Data.LoadFromEnumerable(RetrievalClassifierBehaviourTests.Synthetic(20, 2)));
        long Left(int epochs)
        {
            long before = Live();
            using (ml.MulticlassClassification.Trainers.RetrievalClassifier(options(epochs, validation)).Fit(keyed)) { }
            return Live() - before;
        }
        Left(1); // warms up what TorchSharp creates once per process
        return (Left(1), Left(3));
    }

    [Fact]
    public void ATinyStudentLeavesNoTensorAlive()
    {
        var (one, three) = LeftAlive((epochs, _) => new() { HiddenSize = 8, Layers = 1, Heads = 2, MaxLength = 16, Epochs = epochs, Seed = 2 });
        Assert.True((one, three) == (0, 0), $"tensors left alive by a Fit: {one} after 1 epoch, {three} after 3");
    }

    /// <summary>
    /// A student that chooses its epoch on a validation set keeps a copy of the best epoch's weights; it was made by
    /// detach().clone(), which left detach()'s handle, one per parameter and buffer, to the finalizer.
    /// </summary>
    [Fact]
    public void AStudentThatChoosesItsEpochLeavesNoTensorAlive()
    {
        var (one, three) = LeftAlive((epochs, validation) => new()
        {
            HiddenSize = 8, Layers = 1, Heads = 2, MaxLength = 16, Epochs = epochs, Seed = 2, ValidationSet = validation, EarlyStoppingPatience = 1,
        });
        Assert.True((one, three) == (0, 0), $"tensors left alive by a Fit: {one} after 1 epoch, {three} after 3");
    }

    /// <summary>
    /// A frozen backbone's student re-embeds its store every epoch from the cached embeddings; the rows it selected
    /// ([N, D], a copy of the whole store's embeddings) were left to the finalizer at every epoch.
    /// </summary>
    [Fact]
    public void AFrozenBackboneStudentLeavesNoTensorAlive()
    {
        var backbone = PretrainedEncoderPackage.MiniLM.Locate();
        var (one, three) = LeftAlive((epochs, _) => new() { Backbone = backbone, MaxLength = 16, Epochs = epochs, Seed = 2 });
        Assert.True((one, three) == (0, 0), $"tensors left alive by a Fit: {one} after 1 epoch, {three} after 3");
    }
}
