using RetriKT.MLNet.Teacher;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.Tests.Teacher;

/// <summary>A teacher disposed while, or before, another thread generates or scores with it.</summary>
public class DisposedTeacherTests
{
    private static TeacherModel Stories() => TeacherModel.Load(TeacherGoldenTests.Models("llama2c-stories260K", "stories260K.bin"));

    /// <summary>
    /// Dispose freed the weights whatever another thread was doing with them: a teacher dropped while a store was
    /// being labelled freed them under that thread's forward pass, and the managed decoding steps, which read the
    /// parameters' storage by address, went on reading the freed memory. Dispose now waits for the calls in flight;
    /// each either finishes with the same sequences or is refused naming the teacher.
    /// </summary>
    [SharedDataFact]
    public void DisposeWaitsForAGenerationInFlight()
    {
        var teacher = Stories();
        var request = new GenerationRequest { PromptIds = [[1], [1, 403], [1, 403, 261]], MaxNewTokens = 48, Temperature = 0 };
        var expected = teacher.Generate(request).Sequences.Select(s => s.TokenIds).ToArray();
        using var started = new ManualResetEventSlim();
        int generated = 0;
        var inFlight = Task.Run(() =>
        {
            for (int i = 0; i < 100_000; i++)
            {
                var got = teacher.Generate(request).Sequences;
                for (int row = 0; row < expected.Length; row++)
                    Assert.True(expected[row].SequenceEqual(got[row].TokenIds), $"generation {i}, row {row}: other tokens");
                generated++;
                started.Set();
            }
        });
        Assert.True(started.Wait(TimeSpan.FromMinutes(1)), "no generation finished");
        teacher.Dispose();
        var refused = Assert.Throws<ObjectDisposedException>(() => inFlight.GetAwaiter().GetResult());
        Assert.Equal(nameof(TeacherModel), refused.ObjectName);
        Assert.InRange(generated, 1, 99_999);
    }

    /// <summary>A disposed teacher refuses every call that needs its weights, naming itself, instead of a torch error.</summary>
    [SharedDataFact]
    public void ADisposedTeacherRefusesGenerationAndScoringNamingItself()
    {
        var teacher = Stories();
        teacher.Dispose();
        void AssertDisposed(Action use) => Assert.Equal(nameof(TeacherModel), Assert.Throws<ObjectDisposedException>(use).ObjectName);
        AssertDisposed(() => teacher.Generate(new GenerationRequest { PromptIds = [[1]], MaxNewTokens = 4 }));
        AssertDisposed(() => teacher.ScoreContinuations(["Once upon a time"], [" there"]));
        AssertDisposed(() => teacher.ScoreNextTokens(["Once upon a time"], [403]));
        AssertDisposed(() => teacher.ContinuationLogLikelihood([[1]], [[403]]).Dispose());
        teacher.Dispose(); // idempotent
    }
}
