using Microsoft.ML;
using RetriKT.MLNet.Encoders;
using RetriKT.MLNet.Student;
using RetriKT.MLNet.Tests.Infrastructure;
using RetriKT.MLNet.Tests.Student;
using RetriKT.MLNet.Text;
using Xunit.Abstractions;

namespace RetriKT.MLNet.Tests.Encoders;

/// <summary>
/// The runtime's encoders serve without allocating: a call's scratch buffers come from a pool instead of new arrays
/// (a long sequence's are large-object-heap arrays, reclaimed only by gen-2 collections), and calls on many threads at
/// once still give the answers of calls one after another.
/// </summary>
public class EncoderServingAllocationTests(ITestOutputHelper output)
{
    private const int Calls = 20;

    [SharedDataFact]
    public void TheBertEncoderEncodesWithoutAllocatingAndItsStatesStayTheCallersOwn()
    {
        var source = BertEncoderSource.Load(SharedData.Path("models", "hf-tiny-random-bert"), BertPooling.Mean, null, 1e-12);
        var encoder = new ManagedBertEncoder(source.Weights, source.Vocabulary.SepId, source.Segments);
        var sequences = Sequences(source.Vocabulary, encoder.Config.MaxPositions);
        int h = encoder.Config.HiddenSize;

        var pooled = new float[h];
        var longest = sequences.MaxBy(s => s.Length)!;
        encoder.Encode(longest, BertPooling.Mean, pooled); // the pool's first rentals
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < Calls; i++) encoder.Encode(longest, BertPooling.Mean, pooled);
        long perCall = (GC.GetAllocatedBytesForCurrentThread() - before) / Calls;
        output.WriteLine($"BERT Encode, {longest.Length} tokens: {perCall:N0} bytes per call");
        Assert.True(perCall < 1024, $"ManagedBertEncoder.Encode allocated {perCall:N0} bytes per call of {longest.Length} tokens; expected none (pooled scratch).");

        // States hands out an array the caller keeps: later calls must not write into it.
        var states = encoder.States(sequences[0], 2);
        var kept = states.ToArray();
        Assert.Equal(sequences[0].Length * h, states.Length);
        foreach (var ids in sequences) encoder.Encode(ids, BertPooling.Cls, pooled);
        Assert.Equal(kept, states);

        AssertConcurrentEqualsSequential(sequences, h, (ids, row) => encoder.Encode(ids, BertPooling.Mean, row));
    }

    [SharedDataFact]
    public void TheStudentEncoderEncodesWithoutAllocating()
    {
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable(RetrievalClassifierBehaviourTests.Synthetic(30, 11));
        var keyMap = ml.Transforms.Conversion.MapValueToKey("Label").Fit(data);
        using var student = ml.MulticlassClassification.Trainers.RetrievalClassifier(new RetrievalClassifierTrainer.Options
        {
            HiddenSize = 16, Layers = 1, Heads = 2, MaxLength = 64, Epochs = 1, BatchSize = 8,
        }).Fit(keyMap.Transform(data));
        var model = student.Model;
        Assert.IsType<ManagedStudentEncoder>(model.Encoder);
        int sepId = model.Tokenizer.Vocabulary.SepId, h = model.Config.HiddenSize;
        var sequences = Sequences(model.Tokenizer.Vocabulary, model.Config.MaxLength);

        var pooled = new float[h];
        var longest = sequences.MaxBy(s => s.Length)!;
        model.Encoder.Encode(longest, sepId, pooled);
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < Calls; i++) model.Encoder.Encode(longest, sepId, pooled);
        long perCall = (GC.GetAllocatedBytesForCurrentThread() - before) / Calls;
        output.WriteLine($"student Encode, {longest.Length} tokens: {perCall:N0} bytes per call");
        Assert.True(perCall < 1024, $"ManagedStudentEncoder.Encode allocated {perCall:N0} bytes per call of {longest.Length} tokens; expected none (pooled scratch).");

        AssertConcurrentEqualsSequential(sequences, h, (ids, row) => model.Encoder.Encode(ids, sepId, row));
    }

    /// <summary>Real sentences (SST-2's first rows, as pairs too) tokenized to 3 .. <paramref name="maxTokens"/> ids.</summary>
    private static List<int[]> Sequences(WordPieceVocabulary vocabulary, int maxTokens)
    {
        var sentences = File.ReadLines(SharedData.Path("data", "SST-2", "train.tsv")).Skip(1).Take(60).Select(l => l.Split('\t')[0]).ToList();
        var sequences = sentences.Select((s, i) => BertEncoderSource.Tokenize(vocabulary, maxTokens, s, i % 3 == 0 ? sentences[^(i + 1)] : null, PairTruncation.HuggingFaceFast)).ToList();
        sequences.Add(BertEncoderSource.Tokenize(vocabulary, maxTokens, string.Join(' ', sentences), null, PairTruncation.HuggingFaceFast)); // truncated to the longest
        return sequences;
    }

    /// <summary>Encodes every sequence on 8 threads at once and one after another: the rows must be the same bits.</summary>
    private static void AssertConcurrentEqualsSequential(List<int[]> sequences, int h, EncodeRow encode)
    {
        var sequential = new float[sequences.Count * h];
        for (int i = 0; i < sequences.Count; i++) encode(sequences[i], sequential.AsSpan(i * h, h));
        for (int round = 0; round < 3; round++)
        {
            var concurrent = new float[4 * sequential.Length]; // each sequence four times, in its own rows
            Parallel.For(0, sequences.Count * 4, new ParallelOptions { MaxDegreeOfParallelism = 8 },
                j => encode(sequences[j % sequences.Count], concurrent.AsSpan(j * h, h)));
            for (int copy = 0; copy < 4; copy++) Assert.Equal(sequential, concurrent.AsSpan(copy * sequential.Length, sequential.Length).ToArray());
        }
    }

    private delegate void EncodeRow(int[] ids, Span<float> row);
}
