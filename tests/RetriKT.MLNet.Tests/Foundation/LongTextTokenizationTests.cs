using Microsoft.ML;
using RetriKT.MLNet.Encoders;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.Tests.Foundation;

/// <summary>
/// A text far past the token limit is tokenized as its opening and read only as far as the tokens kept. The whole text
/// used to be split and piece-encoded first: a 4 MB text took about 2 s and 480 MB of allocations for a vector that reads
/// its first 254 tokens, which a service taking uploaded documents pays on every request.
/// </summary>
public class LongTextTokenizationTests
{
    private const string Sentence = "The film is a quiet, lovely thing (ünïcödé 東京) that stays with you. ";

    private static readonly string Huge = string.Concat(Enumerable.Repeat(Sentence, 4_000_000 / Sentence.Length));

    // Far more than any budget below in tokens, and cut where every budget is already spent.
    private static readonly string Opening = Huge[..3000];

    private static long Allocated(Action action)
    {
        long before = GC.GetAllocatedBytesForCurrentThread();
        action();
        return GC.GetAllocatedBytesForCurrentThread() - before;
    }

    [SharedDataFact]
    public void AnEncodersTokensOfAHugeTextAreThoseOfItsOpening_SingleAndPaired()
    {
        var encoder = ManagedBertSentenceEncoder.Load(PretrainedEncoderPackage.MiniLM);
        Assert.Equal(256, encoder.Tokenize(Opening).Length);
        int[] ids = [];
        long allocated = Allocated(() => ids = encoder.Tokenize(Huge));
        Assert.Equal(encoder.Tokenize(Opening), ids);
        Assert.True(allocated < 20_000_000, $"tokenizing a {Huge.Length:N0}-character text allocated {allocated:N0} bytes");
        // Pairs are cut longest-first from both lengths: the same from the openings as from the whole texts. (Two huge texts
        // are counted until the shorter ends, for which is the longer: Hugging Face's cut needs it.)
        Assert.Equal(encoder.Tokenize(Opening, Opening), encoder.Tokenize(Huge, Huge));
        Assert.Equal(encoder.Tokenize("is it a good film?", Opening), encoder.Tokenize("is it a good film?", Huge));
        Assert.Equal(encoder.Tokenize(Opening, "is it a good film?"), encoder.Tokenize(Huge, "is it a good film?"));
    }

    [SharedDataFact]
    public void TheStudentTokenizersIdsOfAHugeTextAreThoseOfItsOpening_AndItSaysItTruncated()
    {
        var mlContext = new MLContext(seed: 1);
        var tokenizer = mlContext.RetriKT().TextTokenizer(maxLength: 64).Fit(TestData.Sst2Train(mlContext));
        int[] ids = [];
        long allocated = Allocated(() => ids = tokenizer.Encode(Huge));
        Assert.Equal(64, ids.Length);
        Assert.Equal(tokenizer.Encode(Opening), ids);
        Assert.True(allocated < 20_000_000, $"tokenizing a {Huge.Length:N0}-character text allocated {allocated:N0} bytes");
        Assert.Equal(tokenizer.Encode(Opening, Opening), tokenizer.Encode(Huge, Huge));
        Assert.Equal(tokenizer.Encode("a short one", Opening), tokenizer.Encode("a short one", Huge));
        // Read only up to one token past the room, it still knows it cut the text; and a text of exactly the room is not cut.
        tokenizer.Encode(Huge, null, out bool truncated);
        Assert.True(truncated);
        var fits = string.Join(" ", Enumerable.Repeat("film", 62)); // one piece each: the room of 64 less [CLS] and [SEP]
        Assert.Equal(64, tokenizer.Encode(fits, null, out bool fitsTruncated).Length);
        Assert.False(fitsTruncated);
        tokenizer.Encode(fits + " film", null, out bool oneMoreTruncated);
        Assert.True(oneMoreTruncated);
    }
}
